"""`DJANGO_ENV` chooses the settings: `production`, else `development` (tests use
`project.settings.test`, named in pytest.ini)."""

from project.settings.env import env

if env.str("DJANGO_ENV", default="development") == "production":
    from project.settings.production import *  # noqa: F403
else:
    from project.settings.development import *  # noqa: F403
