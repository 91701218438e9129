"""Object-storage settings (pydantic-settings), built by callers and passed in explicitly."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageSettings(BaseSettings):
    """How to reach S3 (or an S3-compatible endpoint) for sources and destinations.

    Reads ``TESSERA_STAC_S3_*`` and the standard ``AWS_*`` credentials from the environment.
    """

    model_config = SettingsConfigDict(
        env_file=".env", extra="ignore", env_prefix="TESSERA_STAC_S3_"
    )

    endpoint_url: str | None = Field(default=None, description="e.g. http://127.0.0.1:9000")
    region: str = Field(default="us-east-1")
    anonymous: bool = Field(default=False, description="Unsigned requests (public mirrors).")
    access_key_id: str | None = Field(default=None)
    secret_access_key: str | None = Field(default=None)
    multipart_threshold_mb: int = Field(default=64)

    def boto3_client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``boto3.client("s3", ...)``."""
        kwargs: dict[str, object] = {"region_name": self.region}
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.access_key_id and self.secret_access_key:
            kwargs["aws_access_key_id"] = self.access_key_id
            kwargs["aws_secret_access_key"] = self.secret_access_key
        return kwargs

    def gdal_env(self) -> dict[str, str]:
        """GDAL configuration options so ``/vsis3/`` reads the same endpoint."""
        env: dict[str, str] = {"AWS_REGION": self.region}
        if self.endpoint_url:
            from urllib.parse import urlsplit

            parts = urlsplit(self.endpoint_url)
            env["AWS_S3_ENDPOINT"] = parts.netloc
            env["AWS_HTTPS"] = "YES" if parts.scheme == "https" else "NO"
            env["AWS_VIRTUAL_HOSTING"] = "FALSE"
        if self.anonymous:
            env["AWS_NO_SIGN_REQUEST"] = "YES"
        if self.access_key_id and self.secret_access_key:
            env["AWS_ACCESS_KEY_ID"] = self.access_key_id
            env["AWS_SECRET_ACCESS_KEY"] = self.secret_access_key
        return env
