"""`GET /1.0/metrics`: Prometheus metrics in OpenMetrics text, as LXD's own endpoint.

For admins and certificates of type `metrics` (a scraper's certificate reaches nothing
else); anyone else is refused before anything is read.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from ... import metrics_export
from ...auth.dependencies import MetricsReader
from ..dependencies import CoreDep

router = APIRouter(prefix="/1.0/metrics", tags=["metrics"], dependencies=[MetricsReader])


@router.get("", summary="Metrics of the service, its shapes and LXD (OpenMetrics text)",
            response_class=Response)
def get_metrics(c: CoreDep) -> Response:
    return Response(metrics_export.render(c), media_type=metrics_export.CONTENT_TYPE)
