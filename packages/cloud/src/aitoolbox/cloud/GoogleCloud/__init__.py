"""The original AIToolbox's ``aitoolbox.cloud.GoogleCloud`` (Google Cloud Storage savers and loaders through its own
client): replaced by Google Cloud Storage's S3-compatible endpoint; importing it names it."""

raise ImportError(
    "aitoolbox.cloud.GoogleCloud (GCS savers and loaders) is not part of aitoolbox 2: use cloud_save_mode='gcs' on the "
    "tracked variants (GCS's S3-compatible endpoint, HMAC keys as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), or "
    "aitoolbox.cloud.S3Store(bucket, endpoint_url='https://storage.googleapis.com'). See docs/migration.md"
)
