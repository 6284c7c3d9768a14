"""The Open Inference Protocol (V2) REST wire contract, as mlserve speaks it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlserve.schemas import examples

__all__ = [
    "DATATYPES",
    "LABEL_OUTPUT",
    "NUMERIC_DATATYPES",
    "PREDICTION_OUTPUT",
    "PROBABILITIES_OUTPUT",
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
PROBABILITIES_OUTPUT = "probabilities"  # FP64 [-1, n_classes], only with predict_proba

Parameters = dict[str, Any]
Shape = list[Annotated[int, Field(ge=0)]]

_PROTOCOL = ConfigDict(protected_namespaces=())


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
    datatype: str = Field(description="V2 datatype: BYTES for text, FP64 for tabular features.")
    parameters: Parameters | None = None
    data: list[Any]


class RequestOutput(BaseModel):
    """An output the client wants back (all of them when `outputs` is absent)."""

    name: str
    parameters: Parameters | None = Field(
        default=None, description="Accepted; binary_data is ignored (answers are JSON)."
    )


class InferenceRequest(BaseModel):
    model_config = ConfigDict(
        protected_namespaces=(),
        json_schema_extra={"examples": examples.V2_INFERENCE_REQUEST},
    )

    id: str | None = Field(default=None, description="Echoed back; generated when absent.")
    parameters: Parameters | None = Field(
        default=None,
        description="Accepted; binary_data_output is ignored (answers are JSON).",
    )
    inputs: list[RequestInput]
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
    ready: bool | None = Field(default=None, description="true: list only ready models.")


class RepositoryModel(BaseModel):
    name: str
    version: str | None = Field(description="The version serving, when loaded.")
    state: Literal["READY", "UNAVAILABLE", "LOADING"]
    reason: str


class RepositoryLoadRequest(BaseModel):
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
