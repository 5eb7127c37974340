"""Using what was trained: a run's best weights or an exported model folder, applied to new songs.

Public API::

    load_from_run(store, run_id, strict=False) -> TrainedModel
        The run's model, built from its stored config, with the weights at the run row's
        ``checkpoint_path``; refuses (``PredictError``) a run that did not complete, has no
        checkpoint, or whose checkpoint file is gone, naming how to get it back.
    load_from_folder(path, strict=False) -> TrainedModel
        The same from a folder ``export_model`` wrote (``merx.inference.modeldir``).
    load(source, db=None, strict=False) -> TrainedModel
        A folder when ``source`` is one, else a run id in ``db``.
    export_model(store, run_id, folder) -> Path
        A self-contained model folder: config, safetensors weights, feature parameters and the
        reference power, the plugins with their versions, and a model card (README.md).
    predict(trained, songs, windows=None, ...) -> Prediction
        Per song: valence/arousal (regression) or class probabilities (classification) and the
        quadrant, through the run's own feature and text pipeline; failures per song.

Everything a prediction reads about the audio (sample rate, mels, dB reference and floor, the
evaluation crop) and the lyrics (the text tower with its pooling and max_length, the frozen
tower's cache) comes from the run's resolved config and the code the run itself used:
``merx.features.mel`` and ``merx.features.text``.
"""

from __future__ import annotations

from merx.inference.model import TrainedModel, load, load_from_folder, load_from_run
from merx.inference.modeldir import FORMAT_VERSION, export_model
from merx.inference.run import Prediction, SongInput, predict

__all__ = ["FORMAT_VERSION", "Prediction", "SongInput", "TrainedModel", "export_model", "load", "load_from_folder",
           "load_from_run", "predict"]
