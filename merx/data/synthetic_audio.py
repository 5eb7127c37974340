"""The synthetic songs' audio: chords and an arpeggio whose sound follows the song's labels.

Arousal sets tempo, note density and length, brightness (harmonics), drums and loudness; valence
sets major or minor chords (with ``merx.data.synthetic.MODE_AGREEMENT``, decided by the plan).
"""

from __future__ import annotations

import numpy as np


def _midi_hz(note: float) -> float:
    return 440.0 * 2.0 ** ((note - 69) / 12)


def synthesize(song: dict, sample_rate: int, seed: int) -> np.ndarray:
    """One song's waveform (float32, mono): chords plus an arpeggio, and drums when aroused."""
    rng = np.random.default_rng([seed, 2, song["index"]])
    sr, n = sample_rate, song["n_samples"]
    a = song["arousal"]
    out = np.zeros(n, dtype=np.float64)

    tempo = 62 + 110 * a + rng.normal(0, 10)  # bpm
    beat = 60.0 / tempo
    sixteenth = beat / 4
    # Timbre: one wavetable per song; high arousal = more, stronger upper harmonics (brighter).
    n_harm = 3 + int(round(7 * a + rng.normal(0, 1.2)))
    # The highest note (key B3, the V chord's fifth, an octave up: MIDI 85, 1.1 kHz) must keep
    # its harmonics below Nyquist.
    n_harm = int(np.clip(n_harm, 1, sr / 2 / _midi_hz(85)))
    rolloff = 2.3 - 1.3 * a + rng.normal(0, 0.25)
    k = np.arange(1, n_harm + 1)
    size = 4096
    grid = np.arange(size) / size
    table = (np.sin(2 * np.pi * np.outer(k, grid) + rng.uniform(0, 2 * np.pi, (len(k), 1)))
             * (k ** -rolloff)[:, None]).sum(0)
    table /= np.abs(table).max()

    def oscillator(midi: float, length: int) -> np.ndarray:
        step = _midi_hz(midi) * size / sr
        return table[(np.arange(length) * step).astype(np.int64) % size]

    def envelope(length: int, attack: float, decay: float) -> np.ndarray:
        t = np.arange(length) / sr
        return np.minimum(1.0, t / attack) * np.exp(-t / decay)

    root = 48 + int(rng.integers(0, 12))  # key: C3..B3
    third = 4 if song["major"] else 3
    degrees = [0, 5, 7, 0] if rng.random() < 0.5 else [0, 7, 5, 0]  # I-IV-V-I or I-V-IV-I
    chord_len = int(2 * beat * sr) if a > 0.5 else int(4 * beat * sr)
    note_decay = float(np.clip(0.55 - 0.4 * a + rng.normal(0, 0.05), 0.08, 0.7))  # staccato when aroused
    density = float(np.clip(0.2 + 0.75 * a + rng.normal(0, 0.1), 0.1, 1.0))  # chance of a note on each sixteenth
    pad_level = 0.5 - 0.3 * a
    pad_env = envelope(chord_len, attack=0.05, decay=2.0)
    note_env = envelope(int(5 * note_decay * sr), attack=0.005, decay=note_decay)

    for c, start in enumerate(range(0, n, chord_len)):
        chord_root = root + degrees[c % len(degrees)]
        tones = [chord_root, chord_root + third, chord_root + 7]
        length = min(chord_len, n - start)
        ring = min(length + len(note_env), n - start)  # the last notes ring into the next chord
        # One oscillator per chord tone, shaped by the summed envelopes of the notes it plays:
        # the same sound as one oscillator per note, at a fraction of the cost.
        note_envs = np.zeros((3, ring))
        for step in range(int(length / (sixteenth * sr))):
            if rng.random() >= density and step % 4:
                continue
            pos = int(step * sixteenth * sr)
            span = min(len(note_env), ring - pos)
            note_envs[rng.integers(3), pos:pos + span] += note_env[:span]
        for i, note in enumerate(tones):  # the pad holds the chord: the mode is audible throughout
            out[start:start + length] += pad_level * oscillator(note, length) * pad_env[:length]
            out[start:start + ring] += 0.6 * oscillator(note + 12, ring) * note_envs[i]

    drums = float(np.clip((a - 0.3) / 0.5 + rng.normal(0, 0.2), 0, 1))
    if drums > 0:
        hat_len, kick_len = int(0.04 * sr), int(0.15 * sr)
        t = np.arange(kick_len) / sr
        kick = np.sin(2 * np.pi * (50 * t + 60 * (1 - np.exp(-t / 0.03)) * 0.03)) * np.exp(-t / 0.06)
        hat = np.diff(rng.standard_normal(hat_len + 1)) * np.exp(-np.arange(hat_len) / (0.01 * sr))
        for step, pos in enumerate(range(0, n, int(sixteenth * sr * 2))):
            seg = min(hat_len, n - pos)
            out[pos:pos + seg] += 0.25 * drums * hat[:seg]
            if step % 2 == 0:
                seg = min(kick_len, n - pos)
                out[pos:pos + seg] += 0.9 * drums * kick[:seg]

    out += rng.standard_normal(n) * 1e-3  # a noise floor, as any recording has
    target_db = -30 + 18 * a + rng.normal(0, 4)  # loudness follows arousal
    rms = np.sqrt(np.mean(out ** 2)) + 1e-12
    out *= 10 ** (target_db / 20) / rms
    peak = np.abs(out).max()
    if peak > 0.99:
        out *= 0.99 / peak
    return out.astype(np.float32)
