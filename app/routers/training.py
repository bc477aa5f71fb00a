"""The training API (placeholder until its part lands)."""

from fastapi import APIRouter

router = APIRouter(tags=["training"])
