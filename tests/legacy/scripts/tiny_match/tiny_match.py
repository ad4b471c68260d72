"""A `datasets.Metric` in the style of the metrics `load_metric` fetched from GitHub (datasets <= 2.x)."""

import datasets

_DESCRIPTION = "Fraction of predictions equal to their reference."
_KWARGS_DESCRIPTION = "predictions, references: lists of ints"
_CITATION = ""


class TinyMatch(datasets.Metric):
    def _info(self):
        return datasets.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("int32"),
                                        "references": datasets.Value("int32")}),
        )

    def _compute(self, predictions, references):
        return {"match": sum(int(p == r) for p, r in zip(predictions, references, strict=True)) / len(predictions)}
