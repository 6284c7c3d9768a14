"""Ceiling: a bare FastAPI endpoint validating the body and returning fixed JSON, no model."""

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Req(BaseModel):
    text: str


@app.post("/api/predict")
async def predict(req: Req) -> dict:
    return {"prediction": "positive", "confidence": 0.9, "probabilities": {"positive": 0.9}}
