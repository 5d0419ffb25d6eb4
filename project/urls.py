from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path, re_path
from django.views import defaults
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from project import health
from project.access import internal_only
from project.metrics import metrics_view


@csrf_exempt
def api_not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Any other path under /api/: the API's JSON error, not Django's HTML page."""
    hint = " (API paths end with a slash)" if not request.path.endswith("/") else ""
    return JsonResponse({"error": "not_found", "detail": f"no such API path: {request.path}{hint}"}, status=404)


def server_error(request: HttpRequest) -> HttpResponse:
    """A 500 under /api/ in the API's JSON shape; Django's page elsewhere (the admin)."""
    if request.path.startswith("/api/"):
        return JsonResponse({"error": "server_error", "detail": "an unexpected error; it has been logged"}, status=500)
    return defaults.server_error(request)


handler500 = server_error

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("tickets.urls")),
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[]), name="schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[], permission_classes=[]),
        name="swagger-ui",
    ),
    re_path(r"^api/(?P<rest>.*)$", api_not_found),
    path("healthz", health.healthz),
    path("readyz", health.readyz),
    path("metrics", internal_only(metrics_view), name="prometheus-django-metrics"),
]
