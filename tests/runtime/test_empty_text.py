"""LoadedModel.prepare refuses empty or whitespace-only text (every serving path prepares its
texts there), naming the field it was given; text with words in it is passed on unchanged."""

from __future__ import annotations

from typing import Any

import pytest

from mlserve.errors import InvalidInputError
from mlserve.registry import Registry
from mlserve.runtime.model import LoadedModel

BLANKS = ["", " ", "\t", "\n\r\n", "\u00a0", "\u2003\u3000", "\u2028\u2029", "\x0b\x0c\x1c"]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    texts = ["good great", "bad awful", "great fine", "awful terrible", "nice good", "bad"]
    labels = ["pos", "neg", "pos", "neg", "pos", "neg"]
    pipe = Pipeline([("tfidf", TfidfVectorizer()), ("clf", LogisticRegression())])
    pipe.fit(texts, labels)
    meta = Registry(tmp_path_factory.mktemp("registry")).register_estimator(pipe, name="t")
    return LoadedModel(pipe, meta, max_text_length=50)


@pytest.mark.parametrize("blank", BLANKS, ids=repr)
def test_blank_text_is_refused_naming_the_default_field(model: LoadedModel, blank: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        model.prepare(text=blank)
    assert caught.value.message == "'text' cannot be empty or whitespace only"
    assert caught.value.status_code == 422


@pytest.mark.parametrize("field", ["texts.3", "line 150", "text[2]"])
def test_blank_text_is_refused_naming_the_callers_field(model: LoadedModel, field: str) -> None:
    with pytest.raises(InvalidInputError) as caught:
        model.prepare(text="   ", field=field)
    assert caught.value.message == f"'{field}' cannot be empty or whitespace only"


@pytest.mark.parametrize("text", ["a", "  good  ", "\tbad\n", "\u200b"])
def test_text_with_a_non_space_character_is_kept_as_sent(model: LoadedModel, text: Any) -> None:
    # U+200B (zero-width space) is not whitespace to Python: it is text the model may score.
    assert model.prepare(text=text) == text
    assert len(model.predict([model.prepare(text=text)])) == 1


def test_a_blank_text_over_the_length_limit_is_refused_as_blank(model: LoadedModel) -> None:
    # The limit is 50 here: the message names the real problem, not the length.
    with pytest.raises(InvalidInputError, match="cannot be empty or whitespace only"):
        model.prepare(text=" " * 500)
