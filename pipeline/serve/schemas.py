"""Request and response bodies of the service (also the OpenAPI schema at /docs)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Reviews(BaseModel):
    """The body of /predict and /explain."""

    model_config = ConfigDict(extra="forbid", strict=True)
    reviews: list[str] = Field(examples=[["배송 빠르고 좋아요", "별로에요 다시는 안 사요"]])


class Prediction(BaseModel):
    label: str = Field(description="긍정 (positive) or 부정 (negative)")
    positive_probability: float


class Predictions(BaseModel):
    predictions: list[Prediction]


class Explanation(Prediction):
    text: str = Field(
        description="the characters the model reads: the cleaned review, cut to "
        "the part the model sees"
    )
    effects: list[float] = Field(
        description="per character of `text`: the positive probability "
        "minus that of the review without this character"
    )
    truncated: bool = Field(description="true if the cleaned review was longer than `text`")


class Explanations(BaseModel):
    explanations: list[Explanation]


class Error(BaseModel):
    error: str


ERRORS = {
    400: {"model": Error, "description": "the body is not valid JSON"},
    413: {"model": Error, "description": "too many reviews, or too large a body"},
    415: {"model": Error, "description": "the body is not sent as JSON"},
    422: {"model": Error, "description": 'the JSON is not {"reviews": [strings]}'},
}
