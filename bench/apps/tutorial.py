"""Baseline: the common tutorial pattern, predict inside an `async def` route (blocks the loop)."""

import os

import joblib
from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()
model = joblib.load(os.environ["BENCH_MODEL"])


class Req(BaseModel):
    text: str


@app.post("/api/predict")
async def predict(req: Req) -> dict:
    label = model.predict([req.text])[0]
    proba = model.predict_proba([req.text])[0]
    return {
        "prediction": str(label),
        "confidence": float(proba.max()),
        "probabilities": {str(c): float(p) for c, p in zip(model.classes_, proba, strict=True)},
    }
