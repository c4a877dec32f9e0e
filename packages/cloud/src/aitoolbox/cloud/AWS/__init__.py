"""The original AIToolbox's ``aitoolbox.cloud.AWS`` (model and results savers and loaders, data access, SES email):
replaced by the tracked variants' cloud modes and :class:`aitoolbox.cloud.S3Store`; importing it names them."""

raise ImportError(
    "aitoolbox.cloud.AWS (PyTorchS3ModelSaver, KerasS3ModelSaver, S3ResultsSaver, model loaders, data access, SES "
    "email) is not part of aitoolbox 2. For a TrainLoop: TrainLoopCheckpointEndSave(..., cloud_save_mode='s3', "
    "bucket_name=...) uploads checkpoints, the final model and the results, verified; for your own files: "
    "aitoolbox.cloud.S3Store(bucket).upload_file(path, key) (and download_file, list). Keras is not supported. See "
    "docs/migration.md, 'Not provided'"
)
