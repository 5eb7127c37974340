"""Feature stage: cached mel spectrograms on an absolute dB scale, cut to a fixed length.

``merx.features.mel`` holds the public API (``extract_features``, ``FeatureSet``, ``to_db``,
``train_max_ref``, ``reference_power``, ``MelView``); ``crop`` the fixed-length strategies;
``cache`` the on-disk layout. Nothing here imports librosa until audio is decoded.
"""
