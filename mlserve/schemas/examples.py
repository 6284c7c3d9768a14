"""The OpenAPI examples of the wire models, one list per model, published as written."""

from __future__ import annotations

from pydantic import JsonValue

__all__ = [
    "ALIAS_CHANGE",
    "ALIAS_UPDATE",
    "ASYNC_PREDICT_REQUEST",
    "BATCH_PREDICT_REQUEST",
    "BATCH_PREDICT_RESPONSE",
    "DETAILED_HEALTH_RESPONSE",
    "FEEDBACK_REQUEST",
    "FEEDBACK_RESPONSE",
    "FEEDBACK_RESULT",
    "HEALTH_RESPONSE",
    "JOB_ACCEPTED",
    "JOB_INFO",
    "JOB_RESULT_PAGE",
    "LIVE_RESPONSE",
    "MODEL_INFO",
    "MODEL_LIST",
    "PREDICT_REQUEST",
    "PREDICT_RESPONSE",
    "QUALITY_REPORT",
    "READY_RESPONSE",
    "RELOAD_RESPONSE",
    "TRAFFIC_INFO",
    "TRAFFIC_UPDATE",
    "V2_INFERENCE_REQUEST",
    "V2_INFERENCE_RESPONSE",
    "V2_MODEL_METADATA_RESPONSE",
    "VERSION_INFO",
]

# Request ids shaped like the server's (server.ids.RequestIds).
_REQUEST_ID = "019ad0aa1b5c8e41f27a09d3b6c54a17"
_BATCH_ID = "019ad0aa21e73c9b5e0d74a2f8161bd9"
_JOB_ID = "6f1c2d0e9b7a4c3f8e5d4c3b2a190817"

# The sample models the examples describe: iris:2 (tabular) and sentiment:3 (text).
_IRIS_FEATURES: list[JsonValue] = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
_IRIS_CLASSES: list[JsonValue] = ["setosa", "versicolor", "virginica"]
_SENTIMENT_CLASSES: list[JsonValue] = ["negative", "neutral", "positive"]
_CONFIDENCE_EDGES: list[JsonValue] = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
_CONFIDENCE_FRACTIONS: list[JsonValue] = [0, 0, 0, 0, 0.0667, 0.1333, 0.2, 0.2667, 0.2, 0.1333]
# What the registry keeps of sentiment:3's hold-out set (ModelMetadata.training).
_SENTIMENT_TRAINING: dict[str, JsonValue] = {
    "class_distribution": {"negative": 0.3333, "neutral": 0.3333, "positive": 0.3333},
    "predicted_class_distribution": {"negative": 0.3333, "neutral": 0.2667, "positive": 0.4},
    "confidence_histogram": {"edges": _CONFIDENCE_EDGES, "fractions": _CONFIDENCE_FRACTIONS},
    "mean_confidence": 0.7421,
}
_SENTIMENT_LOADED_AT = "2025-11-29T16:58:12.655031Z"
_IRIS_LOADED_AT = "2025-11-29T16:58:12.640215Z"

# ---------------------------------------------------------------------------- prediction API
PREDICT_REQUEST: list[JsonValue] = [
    {"text": "The delivery was fast and the staff were lovely."},
    {"text": "Refund took three weeks.", "model": "sentiment@staging"},
    {
        "features": {
            "sepal_length": 5.1,
            "sepal_width": 3.5,
            "petal_length": 1.4,
            "petal_width": 0.2,
        },
        "model": "iris",
    },
    {
        # a DataFrame pipeline: values typed by its signature; null is a missing value
        "features": {"city": "paris", "member": True, "visits": 12, "spend": None},
        "model": "churn",
    },
]

PREDICT_RESPONSE: list[JsonValue] = [
    {
        "prediction": "positive",
        "confidence": 0.91,
        "probabilities": {"negative": 0.04, "neutral": 0.05, "positive": 0.91},
        "scores": None,
        "model": "sentiment",
        "version": 3,
        "processing_time_ms": 1.7,
        "request_id": _REQUEST_ID,
    }
]

BATCH_PREDICT_REQUEST: list[JsonValue] = [
    {"texts": ["Loved it", "Never again", "It arrived on Monday"]},
    {"records": [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], "model": "iris"},
    {
        "records": [
            {"city": "paris", "member": True, "visits": 12, "spend": 48.5},
            {"city": "oslo", "member": None, "visits": 3, "spend": None},
        ],
        "model": "churn",
    },
]

BATCH_PREDICT_RESPONSE: list[JsonValue] = [
    {
        "predictions": [
            {
                "id": f"{_BATCH_ID}-0",
                "prediction": "positive",
                "confidence": 0.88,
                "probabilities": {"negative": 0.05, "neutral": 0.07, "positive": 0.88},
                "scores": None,
            },
            {
                "id": f"{_BATCH_ID}-1",
                "prediction": "negative",
                "confidence": 0.79,
                "probabilities": {"negative": 0.79, "neutral": 0.12, "positive": 0.09},
                "scores": None,
            },
            {
                "id": f"{_BATCH_ID}-2",
                "prediction": "neutral",
                "confidence": 0.64,
                "probabilities": {"negative": 0.14, "neutral": 0.64, "positive": 0.22},
                "scores": None,
            },
        ],
        "model": "sentiment",
        "version": 3,
        "batch_size": 3,
        "total_processing_time_ms": 2.4,
        "request_id": _BATCH_ID,
    }
]

# ---------------------------------------------------------------------------- models
MODEL_LIST: list[JsonValue] = [
    {
        "models": [
            {
                "name": "iris",
                "task": "tabular-classification",
                "versions": [1, 2],
                "aliases": {"production": 2},
                "serving_version": 2,
                "loaded_versions": [2],
                "status": "loaded",
                "error": None,
            },
            {
                "name": "sentiment",
                "task": "text-classification",
                "versions": [1, 2, 3, 4, 5],
                "aliases": {"production": 3, "staging": 4},
                "serving_version": 3,
                "loaded_versions": [3, 4, 5],
                "status": "loaded",
                "error": None,
            },
        ],
        "default_model": "sentiment",
    }
]

VERSION_INFO: list[JsonValue] = [
    {
        "name": "iris",
        "version": 2,
        "created_at": "2025-11-21T14:02:51.208113Z",
        "source": "mlserve train",
        "description": "Iris species from sepal and petal measurements (cm).",
        "tags": {"dataset": "iris.csv"},
        "sha256": "c57522edd1ec1f815de333cc813cac871d9f05d6266a03afef95c6bc6eab092c",
        "size_bytes": 1071,
        "artifact": "model.joblib",
        "format": "joblib",
        "format_details": {},
        "python_version": "3.12.7",
        "sklearn_version": "1.5.2",
        "joblib_version": "1.4.2",
        "estimator": "LogisticRegression",
        "task": "tabular-classification",
        "input_schema": {
            "kind": "tabular",
            "feature_names": _IRIS_FEATURES,
            "n_features": 4,
            "columns": [
                {"name": n, "dtype": "float", "nullable": False, "categories": None}
                for n in _IRIS_FEATURES
            ],
            "dataframe": False,
            "notes": [],
        },
        "classes": _IRIS_CLASSES,
        "has_predict_proba": True,
        "n_outputs": 1,
        "score_method": None,
        "metrics": {"accuracy": 0.9737, "macro_f1": 0.9733, "n_train": 112, "n_test": 38},
        "training": {
            "class_distribution": {"setosa": 0.3304, "versicolor": 0.3393, "virginica": 0.3304},
            "predicted_class_distribution": {
                "setosa": 0.3421,
                "versicolor": 0.3158,
                "virginica": 0.3421,
            },
            "mean_confidence": 0.9012,
        },
        "aliases": ["production"],
        "loaded": True,
        "loaded_at": _IRIS_LOADED_AT,
        "warnings": [],
    }
]

MODEL_INFO: list[JsonValue] = [
    {
        "name": "sentiment",
        "version": 3,
        "created_at": "2025-11-20T09:14:03.512204Z",
        "source": "mlserve train",
        "description": "Review sentiment: TF-IDF and logistic regression.",
        "tags": {"dataset": "reviews.csv"},
        "sha256": "e92c18b23fc013e799353d592d54cef9634fdde74128c627984a5cdb207aa4e7",
        "size_bytes": 48213,
        "artifact": "model.joblib",
        "format": "joblib",
        "format_details": {},
        "python_version": "3.12.7",
        "sklearn_version": "1.5.2",
        "joblib_version": "1.4.2",
        "estimator": "Pipeline[TfidfVectorizer, LogisticRegression]",
        "task": "text-classification",
        "input_schema": {
            "kind": "text",
            "feature_names": None,
            "n_features": None,
            "columns": None,
            "dataframe": False,
            "notes": [],
        },
        "classes": _SENTIMENT_CLASSES,
        "has_predict_proba": True,
        "n_outputs": 1,
        "score_method": None,
        "metrics": {
            "accuracy": 0.8667,
            "macro_f1": 0.8512,
            "n_train": 60,
            "n_test": 15,
        },
        "training": _SENTIMENT_TRAINING,
        "aliases": ["production"],
        "loaded": True,
        "loaded_at": _SENTIMENT_LOADED_AT,
        "warnings": [],
        "versions": [1, 2, 3, 4, 5],
        "all_aliases": {"production": 3, "staging": 4},
    }
]

RELOAD_RESPONSE: list[JsonValue] = [
    {"name": "sentiment", "status": "reloaded", "previous_version": 3, "version": 4}
]

# ---------------------------------------------------------------------------- traffic and aliases
TRAFFIC_UPDATE: list[JsonValue] = [{"split": {"3": 90, "4": 10}, "shadow": 5}]

TRAFFIC_INFO: list[JsonValue] = [
    {
        "model": "sentiment",
        "split": {"3": 90, "4": 10},
        "shadow": 5,
        "serving_version": 3,
        "source": "runtime",
    }
]

ALIAS_UPDATE: list[JsonValue] = [{"version": 4}]

ALIAS_CHANGE: list[JsonValue] = [
    {
        "name": "sentiment",
        "alias": "production",
        "version": 4,
        "previous_version": 3,
        "serving_version": 4,
        "reload_error": None,
    }
]

# ---------------------------------------------------------------------------- health
_IRIS_HEALTH: dict[str, JsonValue] = {
    "name": "iris",
    "version": 2,
    "status": "healthy",
    "latency_ms": 1.184,
    "error": None,
}
_SENTIMENT_HEALTH: dict[str, JsonValue] = {
    "name": "sentiment",
    "version": 3,
    "status": "healthy",
    "latency_ms": 2.051,
    "error": None,
}

HEALTH_RESPONSE: list[JsonValue] = [
    {
        "status": "healthy",
        "version": "0.1.0",
        "uptime_s": 5231.402,
        "models": [_IRIS_HEALTH, _SENTIMENT_HEALTH],
        "dependencies": {"redis": "up"},
    }
]

DETAILED_HEALTH_RESPONSE: list[JsonValue] = [
    {
        "status": "healthy",
        "version": "0.1.0",
        "uptime_s": 5231.402,
        "models": [
            {**_IRIS_HEALTH, "loaded_at": _IRIS_LOADED_AT, "predictions": 1873, "queue_depth": 0},
            {
                **_SENTIMENT_HEALTH,
                "loaded_at": _SENTIMENT_LOADED_AT,
                "predictions": 52410,
                "queue_depth": 2,
            },
        ],
        "dependencies": {"redis": "up"},
        "process": {
            "pid": 41872,
            "cpu_percent": 23.5,
            "cpu_seconds": 812.37,
            "rss_bytes": 183500800,
            "threads": 14,
            "open_requests": 3,
        },
    }
]

READY_RESPONSE: list[JsonValue] = [
    {"ready": True, "models": {"iris": "loaded", "sentiment": "loaded"}}
]

LIVE_RESPONSE: list[JsonValue] = [{"live": True}]

# ---------------------------------------------------------------------------- async jobs
ASYNC_PREDICT_REQUEST: list[JsonValue] = [*BATCH_PREDICT_REQUEST, PREDICT_REQUEST[1]]

JOB_ACCEPTED: list[JsonValue] = [
    {
        "job_id": _JOB_ID,
        "status": "pending",
        "status_url": f"/api/jobs/{_JOB_ID}",
        "result_url": f"/api/jobs/{_JOB_ID}/result",
        "model": "sentiment",
        "version": 3,
        "total": 3,
        "created_at": "2025-11-29T17:30:00Z",
    }
]

JOB_INFO: list[JsonValue] = [
    {
        "job_id": _JOB_ID,
        "status": "running",
        "model": "sentiment",
        "version": 3,
        "kind": "texts",
        "progress": {"done": 1500, "total": 10000},
        "created_at": "2025-11-29T17:30:00Z",
        "started_at": "2025-11-29T17:30:00.2Z",
        "finished_at": None,
        "expires_at": None,
        "error": None,
        "status_url": f"/api/jobs/{_JOB_ID}",
        "result_url": f"/api/jobs/{_JOB_ID}/result",
    }
]

JOB_RESULT_PAGE: list[JsonValue] = [
    {
        "job_id": _JOB_ID,
        "model": "iris",
        "version": 2,
        "total": 3,
        "offset": 0,
        "limit": 2,
        "next_offset": 2,
        "predictions": [
            {
                "prediction": "setosa",
                "confidence": 0.98,
                "probabilities": {"setosa": 0.98, "versicolor": 0.02, "virginica": 0.0},
                "scores": None,
            },
            {
                "prediction": "virginica",
                "confidence": 0.93,
                "probabilities": {"setosa": 0.0, "versicolor": 0.07, "virginica": 0.93},
                "scores": None,
            },
        ],
        "status": "completed",
        "done": 3,
        "error": None,
    }
]

# ---------------------------------------------------------------------------- feedback and quality
FEEDBACK_REQUEST: list[JsonValue] = [
    {"request_id": _REQUEST_ID, "label": "positive"},
    {
        "items": [
            {"request_id": f"{_BATCH_ID}-1", "label": "negative"},
            {"request_id": f"{_BATCH_ID}-2", "label": "neutral"},
        ]
    },
]

FEEDBACK_RESULT: list[JsonValue] = [
    {
        "request_id": _REQUEST_ID,
        "outcome": "accepted",
        "model": "sentiment",
        "version": 3,
        "predicted": "positive",
        "label": "positive",
        "correct": True,
        "error": None,
    }
]

_UNKNOWN_REQUEST_ID = "019a1f3c0d2e4b7a9c81f05e36d2a4b8"
FEEDBACK_RESPONSE: list[JsonValue] = [
    {
        "accepted": 1,
        "replaced": 0,
        "unknown": 1,
        "invalid": 0,
        "items": [
            {
                "request_id": f"{_BATCH_ID}-1",
                "outcome": "accepted",
                "model": "sentiment",
                "version": 3,
                "predicted": "negative",
                "label": "negative",
                "correct": True,
                "error": None,
            },
            {
                "request_id": _UNKNOWN_REQUEST_ID,
                "outcome": "unknown",
                "model": None,
                "version": None,
                "predicted": None,
                "label": None,
                "correct": None,
                "error": f"no prediction with id '{_UNKNOWN_REQUEST_ID}' "
                "is kept (unknown, or older than feedback.retention_s = 604800 s)",
            },
        ],
    }
]

QUALITY_REPORT: list[JsonValue] = [
    {
        "model": "sentiment",
        "window": 1000,
        "retention_s": 604800.0,
        "versions": [
            {
                "version": 3,
                "serving": True,
                "predictions": 52410,
                "feedback": 412,
                "rolling": {
                    "labelled": 412,
                    "correct": 351,
                    "accuracy": 0.8519,
                    "macro_f1": 0.8492,
                    "window": 1000,
                },
                "windows": {
                    "1h": {"labelled": 38, "correct": 33, "accuracy": 0.8684, "macro_f1": 0.8611},
                    "24h": {
                        "labelled": 290,
                        "correct": 248,
                        "accuracy": 0.8552,
                        "macro_f1": 0.8523,
                    },
                    "7d": {
                        "labelled": 412,
                        "correct": 351,
                        "accuracy": 0.8519,
                        "macro_f1": 0.8492,
                    },
                },
                "confusion_matrix": {
                    "labels": _SENTIMENT_CLASSES,
                    "matrix": [[118, 12, 6], [9, 97, 14], [5, 15, 136]],
                },
                "drift": {
                    "status": "stable",
                    "reason": None,
                    "predictions": 9130,
                    "window_s": 86400.0,
                    "psi": 0.0155,
                    "classes": [
                        {"label": "negative", "training": 0.3333, "live": 0.29, "psi": 0.006},
                        {"label": "neutral", "training": 0.2667, "live": 0.25, "psi": 0.0011},
                        {"label": "positive", "training": 0.4, "live": 0.46, "psi": 0.0084},
                    ],
                    "confidence": {
                        "edges": _CONFIDENCE_EDGES,
                        "training": _CONFIDENCE_FRACTIONS,
                        "live": [0, 0, 0, 0, 0.09, 0.12, 0.19, 0.27, 0.21, 0.12],
                        "psi": 0.0108,
                    },
                    "live_mean_confidence": 0.7388,
                },
                "training": {
                    "accuracy": 0.8667,
                    "macro_f1": 0.8512,
                    "n_test": 15,
                    **_SENTIMENT_TRAINING,
                },
            }
        ],
    }
]

# ---------------------------------------------------------------------------- Open Inference (V2)
V2_MODEL_METADATA_RESPONSE: list[JsonValue] = [
    {
        "name": "iris",
        "versions": ["1", "2"],
        "platform": "sklearn",
        "inputs": [{"name": "input", "datatype": "FP64", "shape": [-1, 4]}],
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 3]},
        ],
        "parameters": {
            "version": "2",
            "task": "tabular-classification",
            "classes": _IRIS_CLASSES,
            "feature_names": _IRIS_FEATURES,
        },
    }
]

V2_INFERENCE_REQUEST: list[JsonValue] = [
    {
        "id": "42",
        "inputs": [
            {
                "name": "text",
                "shape": [2],
                "datatype": "BYTES",
                "data": ["Loved it", "Never again"],
            }
        ],
    }
]

V2_INFERENCE_RESPONSE: list[JsonValue] = [
    {
        "model_name": "sentiment",
        "model_version": "3",
        "id": "42",
        "outputs": [
            {
                "name": "label",
                "shape": [2],
                "datatype": "BYTES",
                "data": ["positive", "negative"],
            },
            {
                "name": "probabilities",
                "shape": [2, 3],
                "datatype": "FP64",
                "data": [0.04, 0.05, 0.91, 0.88, 0.07, 0.05],
            },
        ],
    }
]
