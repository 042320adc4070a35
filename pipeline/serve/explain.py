"""Explanations by occlusion: each character's effect is the score without it, minus the score."""

from __future__ import annotations

from pipeline.cleaning import clean_text
from pipeline.labels import label_of
from pipeline.serve.schemas import Explanation
from pipeline.serve.scorer import Scorer
from pipeline.tokenizer import CharTokenizer


def occlusion_variants(tokenizer: CharTokenizer, review: str) -> tuple[str, list[str], bool]:
    """(characters the model reads, the review without each one in turn, whether it was cut).

    The review is cleaned by the one cleaning function, then cut where the tokenizer cuts it
    (maxlen ids, which with unit="jamo" is fewer characters); each variant keeps up to maxlen
    more characters beyond that, so a removed character lets the next one slide into view as it
    would in the full review.
    """
    cleaned = clean_text(review)
    start, end = tokenizer.kept_span(cleaned)
    n = tokenizer.maxlen
    context = max(start - n, 0)  # what may slide in, on the side the tokenizer cuts
    variants = [cleaned[context:i] + cleaned[i + 1 : end + n] for i in range(start, end)]
    return cleaned[start:end], variants, end - start < len(cleaned)


async def explain(scorer: Scorer, reviews: list[str]) -> list[Explanation]:
    """Each review's probability and its characters' occlusion effects, all in one batch."""
    predictor = scorer.predictor
    parts = [occlusion_variants(predictor.tokenizer, review) for review in reviews]
    pairs = zip(reviews, parts, strict=True)
    texts = [t for review, (_, variants, _) in pairs for t in (review, *variants)]
    probs = await scorer.score(texts)
    out, start = [], 0
    for shown, variants, truncated in parts:
        prob = float(probs[start])
        effects = prob - probs[start + 1 : start + 1 + len(variants)]
        start += 1 + len(variants)
        out.append(
            Explanation(
                label=label_of(prob),
                positive_probability=prob,
                text=shown,
                effects=[round(float(e), 6) for e in effects],
                truncated=truncated,
            )
        )
    return out
