"""Built-in data sources: the real MERGE dataset, and a synthetic one in MERGE's layout."""

from merx import hookimpl


@hookimpl
def register_data_sources(register):
    register("merge", merge)
    register("synthetic", synthetic)


def _setting_error(key: str | None, message: str):
    from merx.config import ConfigError

    return ConfigError(message, key=f"data.source.{key}" if key else "data.source")


def merge(root: str = "data/MERGE_Bimodal_Complete", subset: str = "bimodal", balanced: bool = False,
          split: str = "70_15_15"):
    """The MERGE dataset (Zenodo 13939205) as downloaded: audio, lyrics, V/A and official splits.

    root: the extracted subset folder (e.g. MERGE_Bimodal_Complete); relative to the current
    directory. subset: bimodal, audio or lyrics. balanced: the Balanced variant instead of
    Complete. split: the official split, 70_15_15 or 40_30_30. Songs whose files are missing,
    empty or unreadable are reported as failures with the reason, never dropped silently.
    MERGE is not downloaded by merx: get it from https://zenodo.org/records/13939205."""
    from merx.data.merge import SPLIT_SCHEMES, SUBSETS, MergeReader, normalise_split

    if subset.strip().lower() not in SUBSETS:
        raise _setting_error("subset", f"must be one of {', '.join(map(repr, SUBSETS))}, got {subset!r}")
    try:
        normalise_split(split)
    except ValueError:
        raise _setting_error("split", f"must be one of {', '.join(map(repr, SPLIT_SCHEMES))} "
                                      f"(MERGE's official splits), got {split!r}") from None
    from pathlib import Path

    return MergeReader(Path(root).expanduser().absolute(), subset=subset, balanced=balanced, split=split)


def synthetic(cache_dir, n_songs: int = 240, duration: float = 8.0, min_duration: float = 3.0,
              sample_rate: int = 22050, seed: int = 0):
    """A small generated dataset in MERGE Bimodal's layout (the default; no download needed).

    Generated once from the seed into the cache folder, as MP3 audio, TXT lyrics and MERGE's
    CSV tables, then read by the same reader as real MERGE. Arousal shows strongly in the audio
    (tempo, loudness, brightness) and weakly in the lyrics; valence strongly in the lyrics'
    words and weakly in the audio (major/minor): a bimodal model should beat either modality
    alone. About 30 % of clips are shorter than `duration` (down to `min_duration` seconds)."""
    from merx.data.synthetic import SyntheticMerge, SyntheticSpec

    try:
        spec = SyntheticSpec(n_songs=n_songs, duration=float(duration), min_duration=float(min_duration),
                             sample_rate=sample_rate, seed=seed)
    except ValueError as exc:
        raise _setting_error(None, str(exc)) from None
    return SyntheticMerge(cache_dir, spec)
