"""`DJANGO_ENV` chooses the settings: `production` or `development` (unset: development; tests use
`project.settings.test`, named in pytest.ini). Any other value refuses to start: a misspelt
`produciton` must not quietly run the lab's settings (debug on, any host, embedded servers)."""

from django.core.exceptions import ImproperlyConfigured

from project.settings.env import env

_ENVS = ("production", "development")
_env = env.str("DJANGO_ENV", default="development")
if _env not in _ENVS:
    raise ImproperlyConfigured(f"DJANGO_ENV={_env!r} is not one of {', '.join(_ENVS)}")
if _env == "production":
    from project.settings.production import *  # noqa: F403
else:
    from project.settings.development import *  # noqa: F403
