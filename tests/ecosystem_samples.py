"""Real objects of the ML ecosystem, made the way users make them, for the benign ecosystem corpus and for
``scripts/gen_ecosystem.py`` (which pickles them to learn which globals the ecosystem's pickles name).

Each builder returns one object; packages are imported inside the builders, so a missing package only
drops its samples (``available`` says which are installed). Models are tiny and fitted on a few rows.
The classes defined here are the test's own: the only globals allowed to stay unknown in the corpus.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import functools
import importlib.util
import tempfile
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGES = (
    "sklearn",
    "pandas",
    "scipy",
    "xgboost",
    "lightgbm",
    "transformers",
    "tokenizers",
    "accelerate",
    "peft",
    "diffusers",
    "sentence_transformers",
    "lightning",
    "torch",
)
"""Import names of the packages sampled (torch for the training artifacts)."""


@dataclass(frozen=True)
class Sample:
    name: str
    package: str
    """Import name of the package the object comes from (its samples need it installed)."""
    build: Callable[[], Any]
    torch_save: bool = False
    """Also written with ``torch.save`` (objects holding tensors)."""


def available(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _xy(n: int = 40, classes: int = 2) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 4))
    y = (np.arange(n) % classes).astype(int)
    return x, y


def _fit(estimator: Any, classes: int = 2) -> Any:
    x, y = _xy(classes=classes)
    return estimator.fit(x, y)


def _sk(path: str, classes: int = 2, **params: Any) -> Callable[[], Any]:
    def build() -> Any:
        module, _, name = path.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        return _fit(cls(**params), classes)

    return build


def _sk_text() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer().fit(["a cat sat", "a dog ran", "the cat ran"])


def _sk_pipeline() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return _fit(make_pipeline(StandardScaler(), LogisticRegression()))


def _sk_column_transformer() -> Any:
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    frame = pd.DataFrame({"city": ["a", "b", "a", "c"], "n": [1.0, None, 3.0, 4.0]})
    ct = ColumnTransformer([("cat", OneHotEncoder(handle_unknown="ignore"), ["city"]), ("num", SimpleImputer(), ["n"])])
    return ct.fit(frame)


def _sk_grid() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    return _fit(GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0]}, cv=2))


def _sk_function_transformer() -> Any:
    import numpy as np
    from sklearn.preprocessing import FunctionTransformer

    return FunctionTransformer(np.log1p).fit([[1.0], [2.0]])


def _sk_label_encoder() -> Any:
    from sklearn.preprocessing import LabelEncoder

    return LabelEncoder().fit(["cat", "dog", "cat"])


SKLEARN = [
    ("LogisticRegression", "sklearn.linear_model.LogisticRegression", {}),
    ("Ridge", "sklearn.linear_model.Ridge", {}),
    ("Lasso", "sklearn.linear_model.Lasso", {}),
    ("SGDClassifier", "sklearn.linear_model.SGDClassifier", {}),
    ("RandomForest", "sklearn.ensemble.RandomForestClassifier", {"n_estimators": 3}),
    ("ExtraTrees", "sklearn.ensemble.ExtraTreesRegressor", {"n_estimators": 3}),
    ("GradientBoosting", "sklearn.ensemble.GradientBoostingClassifier", {"n_estimators": 3}),
    ("HistGradientBoosting", "sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 3}),
    ("IsolationForest", "sklearn.ensemble.IsolationForest", {"n_estimators": 3}),
    ("AdaBoost", "sklearn.ensemble.AdaBoostClassifier", {"n_estimators": 3}),
    ("DecisionTree", "sklearn.tree.DecisionTreeClassifier", {}),
    ("SVC", "sklearn.svm.SVC", {}),
    ("LinearSVC", "sklearn.svm.LinearSVC", {}),
    ("KNeighbors", "sklearn.neighbors.KNeighborsClassifier", {"n_neighbors": 3}),
    ("GaussianNB", "sklearn.naive_bayes.GaussianNB", {}),
    ("MLP", "sklearn.neural_network.MLPClassifier", {"max_iter": 5}),
    ("KMeans", "sklearn.cluster.KMeans", {"n_clusters": 2, "n_init": 1}),
    ("PCA", "sklearn.decomposition.PCA", {"n_components": 2}),
    ("StandardScaler", "sklearn.preprocessing.StandardScaler", {}),
    ("MinMaxScaler", "sklearn.preprocessing.MinMaxScaler", {}),
    ("PolynomialFeatures", "sklearn.preprocessing.PolynomialFeatures", {}),
    ("SimpleImputer", "sklearn.impute.SimpleImputer", {}),
    ("GaussianProcess", "sklearn.gaussian_process.GaussianProcessClassifier", {}),
]


def _frame() -> Any:
    """A DataFrame with every pandas extension dtype and tz-aware columns."""
    import numpy as np
    import pandas as pd

    n = 4
    return pd.DataFrame(
        {
            "int": np.arange(n),
            "float": np.linspace(0, 1, n),
            "str": ["a", "b", "c", "d"],
            "obj": [1, "x", None, 2.5],
            "bool": [True, False, True, False],
            "Int64": pd.array([1, None, 3, 4], dtype="Int64"),
            "UInt8": pd.array([1, 2, None, 4], dtype="UInt8"),
            "Float64": pd.array([0.5, None, 1.5, 2.0], dtype="Float64"),
            "boolean": pd.array([True, None, False, True], dtype="boolean"),
            "string": pd.array(["a", None, "c", "d"], dtype="string"),
            "category": pd.Categorical(["x", "y", "x", "z"]),
            "ordered": pd.Categorical(["lo", "hi", "lo", "hi"], categories=["lo", "hi"], ordered=True),
            "datetime": pd.date_range("2024-01-01", periods=n),
            "utc": pd.date_range("2024-01-01", periods=n, tz="UTC"),
            "paris": pd.date_range("2024-01-01", periods=n, tz=zoneinfo.ZoneInfo("Europe/Paris")),
            "fixed": pd.date_range("2024-01-01", periods=n, tz=datetime.timezone(datetime.timedelta(hours=5))),
            "timedelta": pd.to_timedelta(np.arange(n), unit="h"),
            "period": pd.period_range("2024-01", periods=n, freq="M"),
            "interval": pd.IntervalIndex.from_breaks(np.arange(n + 1)),
            "sparse": pd.arrays.SparseArray([0, 0, 1, 0]),
        }
    )


def _frames() -> list[tuple[str, Callable[[], Any]]]:
    def series() -> Any:
        import pandas as pd

        return pd.Series([1.5, 2.5], index=pd.Index(["a", "b"], name="k"), name="v")

    def multi() -> Any:
        import pandas as pd

        index = pd.MultiIndex.from_product([["a", "b"], [1, 2]], names=["l", "n"])
        return pd.DataFrame({"v": range(4)}, index=index)

    def scalars() -> Any:
        import pandas as pd

        return [
            pd.Timestamp("2024-01-01", tz="Europe/Berlin"),
            pd.Timestamp("2024-01-01"),
            pd.Timedelta("1h"),
            pd.Period("2024-01", freq="M"),
            pd.Interval(0, 1),
            pd.NaT,
            pd.NA,
            pd.offsets.BusinessDay(2),
        ]

    def indexes() -> Any:
        import pandas as pd

        return [
            pd.RangeIndex(5),
            pd.DatetimeIndex(["2024-01-01", "2024-01-02"], freq="D"),
            pd.CategoricalIndex(["a", "b"]),
            pd.timedelta_range("1h", periods=2),
            pd.period_range("2024", periods=2, freq="Y"),
        ]

    def grouped() -> Any:
        frame = _frame()
        return frame.groupby("str")["float"].sum().to_frame()

    return [
        ("DataFrame-all-dtypes", _frame),
        ("Series", series),
        ("MultiIndex-frame", multi),
        ("pandas-scalars", scalars),
        ("pandas-indexes", indexes),
        ("groupby-result", grouped),
    ]


def _scipy() -> list[tuple[str, Callable[[], Any]]]:
    def sparse(kind: str) -> Callable[[], Any]:
        def build() -> Any:
            import numpy as np
            import scipy.sparse as sp

            dense = np.eye(4)
            return getattr(sp, kind)(dense)

        return build

    def tree() -> Any:
        import numpy as np
        from scipy.spatial import KDTree

        return KDTree(np.arange(12.0).reshape(6, 2))

    def rotation() -> Any:
        from scipy.spatial.transform import Rotation

        return Rotation.from_euler("z", 30, degrees=True)

    def interp() -> Any:
        import numpy as np
        from scipy.interpolate import interp1d

        return interp1d(np.arange(5.0), np.arange(5.0) ** 2)

    kinds = "csr_matrix csc_matrix coo_matrix lil_matrix dok_matrix bsr_matrix dia_matrix csr_array coo_array"
    return [(f"scipy-{k}", sparse(k)) for k in kinds.split()] + [
        ("scipy-KDTree", tree),
        ("scipy-Rotation", rotation),
        ("scipy-interp1d", interp),
    ]


def _boosters() -> list[Sample]:
    def xgb() -> Any:
        from xgboost import XGBClassifier

        return _fit(XGBClassifier(n_estimators=3, max_depth=2))

    def xgb_booster() -> Any:
        return xgb().get_booster()

    def lgb() -> Any:
        from lightgbm import LGBMClassifier

        return _fit(LGBMClassifier(n_estimators=3, verbose=-1, min_child_samples=2))

    def lgb_booster() -> Any:
        return lgb().booster_

    return [
        Sample("XGBClassifier", "xgboost", xgb),
        Sample("xgboost-Booster", "xgboost", xgb_booster),
        Sample("LGBMClassifier", "lightgbm", lgb),
        Sample("lightgbm-Booster", "lightgbm", lgb_booster),
    ]


# -- torch and the Hugging Face stack ---------------------------------------------------------------------
def _tiny_bert() -> Any:
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    return BertForSequenceClassification(config).eval()


def _tiny_gpt2() -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32)).eval()


def _word_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordPieceTrainer(vocab_size=40, special_tokens=["[UNK]", "[CLS]", "[SEP]", "[PAD]"])
    tokenizer.train_from_iterator(["a cat sat on the mat", "the dog ran"], trainer)
    return tokenizer


def _bpe_tokenizer() -> Any:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel()
    tokenizer.train_from_iterator(["a cat sat on the mat"], trainers.BpeTrainer(vocab_size=300))
    return tokenizer


def _fast_tokenizer() -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=_word_tokenizer(), unk_token="[UNK]", pad_token="[PAD]")


def _bert_tokenizer() -> Any:
    from transformers import BertTokenizer

    directory = Path(tempfile.mkdtemp(prefix="pw-vocab-"))
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "sat"]) + "\n")
    return BertTokenizer(str(vocab))


def _pipeline() -> Any:
    from transformers import pipeline

    return pipeline("text-classification", model=_tiny_bert(), tokenizer=_fast_tokenizer(), device="cpu")


def _hf() -> list[Sample]:
    def config() -> Any:
        return _tiny_bert().config

    def generation() -> Any:
        from transformers import GenerationConfig

        return GenerationConfig(max_new_tokens=4, do_sample=False)

    def encoding() -> Any:
        return _fast_tokenizer()(["a cat sat"], padding=True)

    def trainer_state() -> Any:
        from transformers import TrainerState

        return TrainerState(epoch=1.0, global_step=10, log_history=[{"loss": 0.5, "step": 10}])

    def training_args() -> Any:
        from transformers import TrainingArguments

        return TrainingArguments(output_dir=tempfile.mkdtemp(prefix="pw-args-"), report_to=[], use_cpu=True)

    def peft_model() -> Any:
        from peft import LoraConfig, get_peft_model

        return get_peft_model(_tiny_bert(), LoraConfig(r=2, target_modules=["query", "value"]))

    def lora_config() -> Any:
        from peft import LoraConfig

        return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"])

    def accelerate_configs() -> Any:
        from accelerate.utils import DataLoaderConfiguration, DistributedType, ProjectConfiguration

        return [DataLoaderConfiguration(), ProjectConfiguration(project_dir="runs"), DistributedType.NO]

    def diffusers_scheduler() -> Any:
        from diffusers import DDPMScheduler

        return DDPMScheduler(num_train_timesteps=10)

    def diffusers_unet() -> Any:
        from diffusers import UNet2DModel

        return UNet2DModel(
            sample_size=8,
            in_channels=1,
            out_channels=1,
            layers_per_block=1,
            block_out_channels=(8, 8),
            norm_num_groups=4,
            down_block_types=("DownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "UpBlock2D"),
        )

    def sentence_model() -> Any:
        from sentence_transformers import SentenceTransformer, models

        return SentenceTransformer(modules=[models.Dense(in_features=4, out_features=2), models.Normalize()])

    def lightning_callbacks() -> Any:
        from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

        return [ModelCheckpoint(dirpath="ckpt", monitor="val_loss"), EarlyStopping("val_loss"), LearningRateMonitor()]

    def lightning_hparams() -> Any:
        from lightning.fabric.utilities.data import AttributeDict

        return AttributeDict(lr=0.1, layers=2)

    return [
        Sample("BertForSequenceClassification", "transformers", _tiny_bert, torch_save=True),
        Sample("GPT2LMHeadModel", "transformers", _tiny_gpt2, torch_save=True),
        Sample("BertConfig", "transformers", config),
        Sample("GenerationConfig", "transformers", generation),
        Sample("BatchEncoding", "transformers", encoding, torch_save=True),
        Sample("TrainerState", "transformers", trainer_state),
        Sample("TrainingArguments", "transformers", training_args),
        Sample("PreTrainedTokenizerFast", "transformers", _fast_tokenizer),
        Sample("BertTokenizer", "transformers", _bert_tokenizer),
        Sample("text-classification-pipeline", "transformers", _pipeline),
        Sample("tokenizers-WordPiece", "tokenizers", _word_tokenizer),
        Sample("tokenizers-BPE", "tokenizers", _bpe_tokenizer),
        Sample("peft-LoRA-model", "peft", peft_model, torch_save=True),
        Sample("peft-LoraConfig", "peft", lora_config),
        Sample("accelerate-configs", "accelerate", accelerate_configs),
        Sample("diffusers-DDPMScheduler", "diffusers", diffusers_scheduler),
        Sample("diffusers-UNet2DModel", "diffusers", diffusers_unet, torch_save=True),
        Sample("SentenceTransformer", "sentence_transformers", sentence_model, torch_save=True),
        Sample("lightning-callbacks", "lightning", lightning_callbacks),
        Sample("lightning-hparams", "lightning", lightning_hparams),
    ]


def _torch_net() -> Any:
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.GELU(),
        nn.Dropout(0.1),
        nn.Flatten(),
        nn.LayerNorm(4 * 6 * 6),
        nn.Linear(4 * 6 * 6, 8),
        nn.SiLU(),
        nn.Linear(8, 2),
    )


def _rnn() -> Any:
    from torch import nn

    return nn.ModuleDict({"lstm": nn.LSTM(4, 8, batch_first=True), "gru": nn.GRU(4, 8), "emb": nn.Embedding(10, 4)})


def _transformer_layer() -> Any:
    from torch import nn

    return nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), num_layers=1)


def _optimizer(name: str) -> Callable[[], Any]:
    def build() -> Any:
        import torch

        model = _torch_net()
        optimizer = getattr(torch.optim, name)(model.parameters(), lr=0.01)
        model(torch.ones(1, 3, 8, 8)).sum().backward()
        optimizer.step()
        return optimizer

    return build


def _scheduler(name: str) -> Callable[[], Any]:
    def build() -> Any:
        import torch

        optimizer = torch.optim.SGD(_torch_net().parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler
        made = {
            "StepLR": lambda: sched.StepLR(optimizer, 2),
            "MultiStepLR": lambda: sched.MultiStepLR(optimizer, [2, 4]),
            "ExponentialLR": lambda: sched.ExponentialLR(optimizer, 0.9),
            "CosineAnnealingLR": lambda: sched.CosineAnnealingLR(optimizer, 10),
            "CosineAnnealingWarmRestarts": lambda: sched.CosineAnnealingWarmRestarts(optimizer, 5),
            "OneCycleLR": lambda: sched.OneCycleLR(optimizer, 0.1, total_steps=10),
            "CyclicLR": lambda: sched.CyclicLR(optimizer, 0.01, 0.1),
            "ReduceLROnPlateau": lambda: sched.ReduceLROnPlateau(optimizer),
            "LinearLR": lambda: sched.LinearLR(optimizer),
            "LambdaLR-partial": lambda: sched.LambdaLR(optimizer, functools.partial(pow, 0.95)),
            "SequentialLR": lambda: sched.SequentialLR(
                optimizer, [sched.LinearLR(optimizer), sched.ExponentialLR(optimizer, 0.9)], milestones=[2]
            ),
        }[name]()
        optimizer.step()
        made.step() if name != "ReduceLROnPlateau" else made.step(1.0)
        return made

    return build


def _checkpoint() -> Any:
    import numpy as np
    import torch

    model = _torch_net()
    optimizer = torch.optim.AdamW(model.parameters())
    scaler = torch.amp.GradScaler("cpu")
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "args": argparse.Namespace(lr=1e-3, epochs=3, out=Path("runs/exp1")),
        "epoch": 3,
        "history": collections.defaultdict(list, {"loss": [0.5, 0.4]}),
        "rng": {"numpy": np.random.get_state(), "torch": torch.get_rng_state()},
        "saved": datetime.datetime(2024, 5, 1, tzinfo=zoneinfo.ZoneInfo("UTC")),
    }


def _torch_objects() -> list[Sample]:
    def scaler() -> Any:
        import torch

        return torch.amp.GradScaler("cpu")

    def quantized() -> Any:
        import torch

        return {
            "q": torch.quantize_per_tensor(torch.ones(4), 0.1, 0, torch.quint8),
            "sparse": torch.eye(3).to_sparse(),
            "half": torch.ones(2, dtype=torch.float16),
            "bf16": torch.ones(2, dtype=torch.bfloat16),
        }

    def data() -> Any:
        import torch
        from torch.utils.data import Subset, TensorDataset

        dataset = TensorDataset(torch.ones(6, 2), torch.arange(6))
        return {"dataset": dataset, "subset": Subset(dataset, [0, 2])}

    def swa() -> Any:
        import torch

        return torch.optim.swa_utils.AveragedModel(_torch_net())

    def distributions() -> Any:
        import torch

        d = torch.distributions
        return [d.Normal(0.0, 1.0), d.Categorical(torch.ones(3)), d.Bernoulli(0.5), d.Uniform(0.0, 1.0)]

    samples = [
        Sample("torch-cnn", "torch", _torch_net, torch_save=True),
        Sample("torch-rnns", "torch", _rnn, torch_save=True),
        Sample("torch-transformer", "torch", _transformer_layer, torch_save=True),
        Sample("torch-checkpoint", "torch", _checkpoint, torch_save=True),
        Sample("torch-GradScaler", "torch", scaler, torch_save=True),
        Sample("torch-tensor-kinds", "torch", quantized, torch_save=True),
        Sample("torch-datasets", "torch", data, torch_save=True),
        Sample("torch-AveragedModel", "torch", swa, torch_save=True),
        Sample("torch-distributions", "torch", distributions, torch_save=True),
    ]
    samples += [
        Sample(f"torch-optim-{n}", "torch", _optimizer(n), torch_save=True)
        for n in ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad")
    ]
    samples += [
        Sample(f"torch-sched-{n}", "torch", _scheduler(n), torch_save=True)
        for n in (
            "StepLR MultiStepLR ExponentialLR CosineAnnealingLR CosineAnnealingWarmRestarts OneCycleLR CyclicLR "
            "ReduceLROnPlateau LinearLR LambdaLR-partial SequentialLR"
        ).split()
    ]
    return samples


def samples() -> list[Sample]:
    """Every sample whose package is installed."""
    out = [Sample(f"sklearn-{name}", "sklearn", _sk(path, **params)) for name, path, params in SKLEARN]
    out += [
        Sample("sklearn-Tfidf", "sklearn", _sk_text),
        Sample("sklearn-Pipeline", "sklearn", _sk_pipeline),
        Sample("sklearn-ColumnTransformer", "sklearn", _sk_column_transformer),
        Sample("sklearn-GridSearchCV", "sklearn", _sk_grid),
        Sample("sklearn-FunctionTransformer", "sklearn", _sk_function_transformer),
        Sample("sklearn-LabelEncoder", "sklearn", _sk_label_encoder),
        Sample("sklearn-multiclass-LogisticRegression", "sklearn", _sk("sklearn.linear_model.LogisticRegression", 3)),
    ]
    out += [Sample(f"pandas-{name}", "pandas", build) for name, build in _frames()]
    out += [Sample(name, "scipy", build) for name, build in _scipy()]
    out += _boosters() + _hf() + _torch_objects()
    return [s for s in out if available(s.package)]
