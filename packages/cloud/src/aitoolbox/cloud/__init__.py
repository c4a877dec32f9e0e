"""aitoolbox.cloud: S3 (and S3-compatible) storage with preflight checks and background uploads that lose nothing."""

from aitoolbox.cloud._version import __version__
from aitoolbox.cloud.bucket import suggest_bucket_name, validate_bucket_name
from aitoolbox.cloud.errors import (
    CloudAuthError,
    CloudConfigError,
    CloudConnectionError,
    CloudError,
    CloudIntegrityError,
    CloudNotFoundError,
    CloudUploadError,
)
from aitoolbox.cloud.store import ObjectInfo, S3Store
from aitoolbox.cloud.uploader import BackgroundUploader, UploadItem, UploadReport

__all__ = [
    "BackgroundUploader",
    "CloudAuthError",
    "CloudConfigError",
    "CloudConnectionError",
    "CloudError",
    "CloudIntegrityError",
    "CloudNotFoundError",
    "CloudUploadError",
    "ObjectInfo",
    "S3Store",
    "UploadItem",
    "UploadReport",
    "__version__",
    "suggest_bucket_name",
    "validate_bucket_name",
]
