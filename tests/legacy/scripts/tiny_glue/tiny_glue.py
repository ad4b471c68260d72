"""A glue/mrpc look-alike for the legacy recipe: its data comes from URLs named in the script, as glue.py's do.

MRPC is built from three files (dev ids, train, test) fetched from `_URLs`; `ax` from one `data_url` in its
BuilderConfig. Nothing here is ever edited to point at local files: `hfcache map-url` places them instead.
"""

import csv

import datasets

_CITATION = """@misc{tiny, title={Tiny GLUE}, url={https://example.org/tiny-glue/paper}}"""
_DESCRIPTION = "Two GLUE-shaped configs small enough for a test."
_HOMEPAGE = "https://example.org/tiny-glue"
_MRPC_BASE = "https://data.example.invalid/tiny-glue/mrpc"
_URLs = {
    "dev_ids": f"{_MRPC_BASE}/mrpc_dev_ids.tsv",
    "train": _MRPC_BASE + "/msr_paraphrase_train.txt",
    "test": _MRPC_BASE + "/msr_paraphrase_test.txt",
}


class TinyGlueConfig(datasets.BuilderConfig):
    def __init__(self, data_url, url, label_classes, **kwargs):
        super().__init__(version=datasets.Version("1.0.0"), **kwargs)
        self.data_url = data_url
        self.url = url
        self.label_classes = label_classes


class TinyGlue(datasets.GeneratorBasedBuilder):
    BUILDER_CONFIGS = [
        TinyGlueConfig(name="mrpc", data_url="", url="https://example.org/tiny-glue/mrpc.html",
                       label_classes=["not_equivalent", "equivalent"]),
        TinyGlueConfig(name="ax", data_url="https://data.example.invalid/tiny-glue/AX.tsv",
                       url="https://example.org/tiny-glue/ax.html", label_classes=["entailment", "neutral"]),
    ]

    def _info(self):
        features = {"sentence1": datasets.Value("string"), "sentence2": datasets.Value("string"),
                    "label": datasets.ClassLabel(names=self.config.label_classes), "idx": datasets.Value("int32")}
        return datasets.DatasetInfo(description=_DESCRIPTION, features=datasets.Features(features),
                                    homepage=self.config.url, citation=_CITATION)

    def _split_generators(self, dl_manager):
        if self.config.name == "ax":
            path = dl_manager.download(self.config.data_url)
            return [datasets.SplitGenerator(name=datasets.Split.TEST, gen_kwargs={"files": {"ax": path},
                                                                                  "split": "ax"})]
        files = dl_manager.download(_URLs)
        return [datasets.SplitGenerator(name=name, gen_kwargs={"files": files, "split": split})
                for name, split in ((datasets.Split.TRAIN, "train"), (datasets.Split.VALIDATION, "dev"),
                                    (datasets.Split.TEST, "test"))]

    def _generate_examples(self, files, split):
        if split == "ax":
            with open(files["ax"], encoding="utf-8") as f:
                for n, row in enumerate(csv.DictReader(f, delimiter="\t")):
                    yield n, {"sentence1": row["premise"], "sentence2": row["hypothesis"], "label": -1, "idx": n}
            return
        if split == "test":
            with open(files["test"], encoding="utf-8") as f:
                for n, row in enumerate(csv.DictReader(f, delimiter="\t")):
                    yield n, {"sentence1": row["#1 String"], "sentence2": row["#2 String"], "label": -1, "idx": n}
            return
        with open(files["dev_ids"], encoding="utf-8") as f:
            dev_ids = [row[:2] for row in csv.reader(f, delimiter="\t")]
        with open(files["train"], encoding="utf-8") as f:
            for n, row in enumerate(csv.DictReader(f, delimiter="\t")):
                if ([row["#1 ID"], row["#2 ID"]] in dev_ids) == (split == "dev"):
                    yield n, {"sentence1": row["#1 String"], "sentence2": row["#2 String"],
                              "label": int(row["Quality"]), "idx": n}
