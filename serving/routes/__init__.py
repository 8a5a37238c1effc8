"""The HTTP endpoints by concern, one FastAPI `APIRouter` per module, mounted by `serving.app`:

* `operations`: GET /health, GET /ready;
* `inference`: POST /predict, POST /signal;
* `market`: GET /quotes, GET /history/{symbol};
* `risk`: GET /risk, POST /risk/portfolio;
* `model_admin`: GET /models, GET /models/{name}, POST /admin/reload, GET/PUT /admin/ab, GET /admin/audit.

Endpoints reach the worker's state through `serving.runtime.Runtime` and check keys with `access`.
"""
