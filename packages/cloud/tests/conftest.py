from aitoolbox.cloud.pytest_fixtures import aws_env, bucket, s3_server

__all__ = ["aws_env", "bucket", "s3_server"]
