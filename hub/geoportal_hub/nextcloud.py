"""Sign-in through an institute's Nextcloud, with oauthenticator's GenericOAuthenticator.

Nextcloud's OAuth2 app issues the tokens and its OCS API says who the user is. The OCS
answer nests the login name (``{"ocs": {"data": {"id": "alice"}}}``) and oauthenticator 17
reads ``username_claim`` as one flat key, so the claim is a callable here; that is also
why this lives in Python and not in copied YAML. The same function configures the local
hub (``hub.authenticator: nextcloud``) and the Kubernetes hub (``custom.geoportal.nextcloud``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

AUTHORIZE_PATH = "/index.php/apps/oauth2/authorize"
TOKEN_PATH = "/index.php/apps/oauth2/api/v1/token"
USERDATA_PATH = "/ocs/v2.php/cloud/user?format=json"


class NextcloudLogin(BaseModel):
    """Where the Nextcloud is and how the hub is registered there.

    The client secret is not a field: oauthenticator reads it from ``OAUTH_CLIENT_SECRET``,
    which the chart fills from a Kubernetes Secret so it never sits in values or a ConfigMap.
    """

    model_config = ConfigDict(
        extra="forbid", alias_generator=to_camel, populate_by_name=True, frozen=True
    )

    base_url: str = Field(
        description="Nextcloud's address, e.g. https://cloud.example.org (no trailing /index.php)."
    )
    client_id: str = Field(
        "",
        description="OAuth2 client identifier from Nextcloud's admin page (Security → OAuth 2.0); "
        "empty means the OAUTH_CLIENT_ID environment variable.",
    )
    callback_url: str = Field(
        "",
        description="The hub's callback, https://<hub>/hub/oauth_callback; it must equal the "
        "redirection URI registered in Nextcloud. Empty means OAUTH_CALLBACK_URL.",
    )
    login_service: str = Field("Nextcloud", description="Name on the hub's login button.")
    allow_all: bool = Field(
        True, description="Every Nextcloud account may sign in; false restricts to allowed_users."
    )
    allowed_users: list[str] = Field(default_factory=list, description="Nextcloud ids allowed in.")
    admin_users: list[str] = Field(default_factory=list, description="Hub administrators.")
    tls_verify: bool = Field(True, description="Verify Nextcloud's TLS certificate.")

    @field_validator("base_url")
    @classmethod
    def _plain_base(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"baseUrl must start with http:// or https://, got {value!r}")
        if value.endswith("/index.php"):
            raise ValueError("baseUrl must be Nextcloud's root, without /index.php")
        return value

    @property
    def authorize_url(self) -> str:
        """Where the browser is sent to grant access."""
        return self.base_url + AUTHORIZE_PATH

    @property
    def token_url(self) -> str:
        """Where the hub trades the code for an access token."""
        return self.base_url + TOKEN_PATH

    @property
    def userdata_url(self) -> str:
        """The OCS endpoint that returns the signed-in account."""
        return self.base_url + USERDATA_PATH


def nextcloud_username(user_info: dict[str, Any]) -> str:
    """Return the login name from Nextcloud's OCS user answer (``ocs.data.id``).

    Raises:
        ValueError: the answer does not hold ``ocs.data.id`` (a wrong userdata URL, or
            an HTML error page from a proxy); oauthenticator turns it into a failed login.
    """
    try:
        username = user_info["ocs"]["data"]["id"]
    except (KeyError, TypeError):
        keys = sorted(user_info) if isinstance(user_info, dict) else type(user_info).__name__
        raise ValueError(
            "Nextcloud's user answer has no ocs.data.id; check that the userdata URL ends in "
            f"{USERDATA_PATH} (got keys {keys})"
        ) from None
    if not isinstance(username, str) or not username:
        raise ValueError("Nextcloud's ocs.data.id is empty")
    return username


def authenticator_settings(login: NextcloudLogin) -> dict[str, Any]:
    """The GenericOAuthenticator traits for ``login``, as a plain mapping (pure).

    Empty ``client_id``/``callback_url`` are left out so oauthenticator falls back to
    ``OAUTH_CLIENT_ID``/``OAUTH_CALLBACK_URL``.
    """
    settings: dict[str, Any] = {
        "login_service": login.login_service,
        "authorize_url": login.authorize_url,
        "token_url": login.token_url,
        "userdata_url": login.userdata_url,
        "username_claim": nextcloud_username,
        "userdata_token_method": "header",
        "validate_server_cert": login.tls_verify,
        "allow_all": login.allow_all,
        "allowed_users": set(login.allowed_users),
        "admin_users": set(login.admin_users),
        # Nextcloud's OAuth2 app has no scopes; the token grants the whole account.
        "scope": [],
    }
    if login.client_id:
        settings["client_id"] = login.client_id
    if login.callback_url:
        settings["oauth_callback_url"] = login.callback_url
    return settings


def configure_nextcloud(c: Any, login: NextcloudLogin) -> None:
    """Make the hub in traitlets config ``c`` sign users in through Nextcloud."""
    from oauthenticator.generic import GenericOAuthenticator

    c.JupyterHub.authenticator_class = GenericOAuthenticator
    for name, value in authenticator_settings(login).items():
        setattr(c.GenericOAuthenticator, name, value)
