//! The offline recognizer: CMU PocketSphinx with the `en-us` acoustic model.
