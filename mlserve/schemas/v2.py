"""The Open Inference Protocol (V2) REST wire contract, as mlserve speaks it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlserve.schemas import examples
from mlserve.schemas.common import INTEGRAL

__all__ = [
    "DATATYPES",
    "LABEL_OUTPUT",
    "MAX_DIMENSION",
    "MLSERVER_OUTPUTS",
    "NUMERIC_DATATYPES",
    "OUTPUT_NAMES",
    "PREDICTION_OUTPUT",
    "PROBABILITIES_OUTPUT",
    "SCORES_OUTPUT",
    "TABULAR_INPUT",
    "TEXT_INPUT",
    "InferenceRequest",
    "InferenceResponse",
    "MetadataTensor",
    "ModelMetadataResponse",
    "ModelReadyResponse",
    "Parameters",
    "RepositoryIndexRequest",
    "RepositoryLoadRequest",
    "RepositoryLoadResponse",
    "RepositoryModel",
    "RequestInput",
    "RequestOutput",
    "ResponseOutput",
    "ServerLiveResponse",
    "ServerMetadataResponse",
    "ServerReadyResponse",
    "Shape",
    "V2ErrorResponse",
]

# V2 tensor datatypes (BF16 is binary-only in the protocol and has no JSON form).
DATATYPES = (
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
)
# Datatypes a tabular model accepts: numbers, converted to float64 (FP64 is what it advertises).
NUMERIC_DATATYPES = frozenset(DATATYPES) - {"BOOL", "BYTES"}

# Tensor names mlserve uses (see the model metadata endpoint).
TEXT_INPUT = "text"  # text models: BYTES [-1], one string per row
TABULAR_INPUT = "input"  # tabular models: FP64 [-1, n_features], features in the model's order
LABEL_OUTPUT = "label"  # classifiers: the predicted class per row
PREDICTION_OUTPUT = "prediction"  # regressors: FP64 [-1], the predicted value per row
# models without probabilities: FP64 [-1, n]: decision_function (per class; binary: one) or
# an anomaly detector's score_samples (one)
SCORES_OUTPUT = "scores"
PROBABILITIES_OUTPUT = "probabilities"  # FP64 [-1, n_classes], only with predict_proba
# MLServer's scikit-learn runtime names the same outputs after the estimator's methods; a
# request may ask for them by those names too, and is answered under the name it asked.
MLSERVER_OUTPUTS: dict[str, tuple[str, ...]] = {
    "predict": (LABEL_OUTPUT, PREDICTION_OUTPUT),
    "predict_proba": (PROBABILITIES_OUTPUT,),
    "decision_function": (SCORES_OUTPUT,),
    "score_samples": (SCORES_OUTPUT,),
}
# Every output name a request may ask for.
OUTPUT_NAMES = (
    LABEL_OUTPUT,
    PREDICTION_OUTPUT,
    PROBABILITIES_OUTPUT,
    SCORES_OUTPUT,
    *MLSERVER_OUTPUTS,
)

Parameters = dict[str, Any]
# A tensor dimension is an INT64 in the protocol; this bound also keeps it a number every JSON
# reader holds exactly (the OpenAPI document writes bounds as doubles).
MAX_DIMENSION = 2**53 - 1
Shape = list[Annotated[int, Field(ge=0, le=MAX_DIMENSION), INTEGRAL]]

# Requests are read strictly: a number is not a string, 0 is not false (as the schema says).
_PROTOCOL = ConfigDict(protected_namespaces=(), strict=True)


class ServerLiveResponse(BaseModel):
    live: bool


class ServerReadyResponse(BaseModel):
    ready: bool


class ServerMetadataResponse(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="Protocol extensions this server implements.")


class MetadataTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="Dimensions; -1 is variable (the batch).")


class ModelMetadataResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": examples.V2_MODEL_METADATA_RESPONSE})

    name: str
    versions: list[str] = Field(description="Every version of the model in the registry.")
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]
    parameters: Parameters | None = Field(
        default=None,
        description="mlserve extras: the version described, task, classes (the column order of "
        "'probabilities') and feature names (the column order of the tabular input).",
    )


class ModelReadyResponse(BaseModel):
    name: str
    ready: bool


class RequestInput(BaseModel):
    """One input tensor: `data` flat (row-major) or nested; the product of `shape` must equal
    the number of elements."""

    model_config = _PROTOCOL

    name: str
    shape: Shape
    datatype: str = Field(
        description="V2 datatype: BYTES for text (and string columns), FP64 for tabular "
        "features (INT64, BOOL for such columns of DataFrame models).",
        json_schema_extra={"enum": list(DATATYPES)},
    )
    parameters: Parameters | None = None
    data: list[Any]


class RequestOutput(BaseModel):
    """An output the client wants back (all of them when `outputs` is absent)."""

    model_config = _PROTOCOL

    name: str = Field(
        description="An output of the model's metadata, or its MLServer name (predict, "
        "predict_proba).",
        json_schema_extra={"enum": list(OUTPUT_NAMES)},
    )
    parameters: Parameters | None = Field(
        default=None, description="Accepted; binary_data is ignored (answers are JSON)."
    )


class InferenceRequest(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        strict=True,
        json_schema_extra={"examples": examples.V2_INFERENCE_REQUEST},
    )

    id: str | None = Field(default=None, description="Echoed back; generated when absent.")
    parameters: Parameters | None = Field(
        default=None,
        description="Accepted; binary_data_output is ignored (answers are JSON).",
    )
    # One input tensor, or one per column for DataFrame models (the route says which).
    inputs: list[RequestInput] = Field(json_schema_extra={"minItems": 1})
    outputs: list[RequestOutput] | None = None


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={"examples": examples.V2_INFERENCE_RESPONSE},
    )

    model_name: str
    model_version: str
    id: str
    parameters: Parameters | None = None
    outputs: list[ResponseOutput]


class RepositoryIndexRequest(BaseModel):
    model_config = _PROTOCOL

    ready: bool | None = Field(default=None, description="true: list only ready models.")


class RepositoryModel(BaseModel):
    name: str
    version: str | None = Field(description="The version serving, when loaded.")
    state: Literal["READY", "UNAVAILABLE", "LOADING"]
    reason: str


class RepositoryLoadRequest(BaseModel):
    model_config = _PROTOCOL

    parameters: Parameters | None = Field(
        default=None,
        description="Accepted (e.g. unload_dependents); config overrides are not supported.",
    )


class RepositoryLoadResponse(BaseModel):
    name: str
    version: str | None
    state: Literal["READY", "UNAVAILABLE"]


class V2ErrorResponse(BaseModel):
    """The protocol's error shape."""

    error: str
