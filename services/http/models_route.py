"""OpenAI's ``GET /v1/models``: the one model this service serves."""

from __future__ import annotations

from fastapi import APIRouter

from services.http.errors import ApiError
from services.http.openai_jobs import MODEL_ID

router = APIRouter(prefix="/v1/models", tags=["openai"])


def _model() -> dict:
    return {"id": MODEL_ID, "object": "model", "created": 0, "owned_by": "llada-serve"}


@router.get("", summary="The models served")
async def list_models() -> dict:
    return {"object": "list", "data": [_model()]}


@router.get("/{model}", summary="One model")
async def get_model(model: str) -> dict:
    if model.lower() != MODEL_ID:
        raise ApiError(404, f"model: the model {model!r} does not exist", param="model", code="model_not_found")
    return _model()
