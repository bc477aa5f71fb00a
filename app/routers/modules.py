"""The modules API (placeholder: filled by the tree/catalog work)."""

from fastapi import APIRouter

router = APIRouter(tags=["modules"])
