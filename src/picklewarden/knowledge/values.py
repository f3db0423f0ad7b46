"""Reviewed hand entries for values a training run pickles that no generator derives (issue 13): stdlib and
numpy value types, torch operators and utility objects, and ecosystem reconstructors that
``scripts/gen_ecosystem.py`` cannot clear on its own. Each class's unpickling (reconstructor, ``__new__``,
``__setstate__`` or ``__dict__`` update) only stores data; the reason says why.
"""

from __future__ import annotations

from picklewarden._typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Final


def _each(module: str, names: str, reason: str) -> dict[tuple[str, str], str]:
    return {(module, name): reason for name in names.split()}


_EXCEPTION = "exception value: BaseException.__reduce__ rebuilds it from its args and sets its __dict__"
_TORCH_OP = "a torch operator used as a value (activation, loss or reduction); pure tensor math"
# Reviewed hand entries for values a training run pickles that the generated data does not derive: each
# class's unpickling (reconstructor, __new__, __setstate__ or __dict__ update) only stores data.
HAND_SAFE: Final[dict[tuple[str, str], str]] = {
    # stdlib value types
    ("array", "array"): "typed array of numbers; __reduce_ex__ rebuilds it from its bytes",
    ("array", "_array_reconstructor"): "rebuilds an array from its type code, machine format and bytes",
    **_each(
        "ipaddress",
        "IPv4Address IPv6Address IPv4Network IPv6Network IPv4Interface IPv6Interface",
        "IP address value parsed from its text (no lookup, no connection)",
    ),
    **_each("collections", "ChainMap UserDict UserList UserString", "standard container"),
    ("time", "struct_time"): "time tuple value (a structseq built from a tuple)",
    ("random", "Random"): "random generator; __setstate__ restores its Mersenne Twister state only",
    ("platform", "uname_result"): "named tuple of platform strings",
    ("types", "SimpleNamespace"): "plain attribute bag (configs); BUILD sets its attributes",
    ("zoneinfo", "ZoneInfo"): "time zone class; used as a value or as the base of its _unpickle",
    ("zoneinfo", "ZoneInfo._unpickle"): "rebuilds a time zone from its IANA key, which zoneinfo validates as a "
    "relative name inside the time-zone search path; reads only tz data",
    ("copyreg", "__newobj_ex__"): "calls cls.__new__ with keyword arguments; the class is judged separately",
    **_each(
        "builtins",
        "BaseException Exception ArithmeticError AssertionError AttributeError EOFError FloatingPointError "
        "ImportError IndexError KeyError LookupError MemoryError ModuleNotFoundError NameError "
        "NotImplementedError OSError OverflowError RecursionError RuntimeError StopIteration "
        "TimeoutError TypeError ValueError ZeroDivisionError FileNotFoundError FileExistsError "
        "PermissionError Warning UserWarning DeprecationWarning FutureWarning RuntimeWarning",
        _EXCEPTION,
    ),
    **_each("builtins", "abs pow min max sum round divmod len", "pure built-in function of numbers or sequences"),
    **{
        (module, name): "pure operator function (arithmetic or comparison on its arguments)"
        for module in ("operator", "_operator")
        for name in "add sub mul truediv floordiv mod pow neg pos abs eq ne lt le gt ge and_ or_ xor not_ "
        "truth invert lshift rshift matmul index concat contains is_ is_not".split()
    },
    # numpy value types
    **_each(
        "numpy",
        "bool bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 intc uintc intp uintp int_ uint short "
        "ushort byte ubyte longlong ulonglong long ulong float16 float32 float64 half single double longdouble "
        "complex64 complex128 csingle cdouble clongdouble str_ bytes_ void object_ datetime64 timedelta64 "
        "generic number integer signedinteger unsignedinteger inexact floating complexfloating character "
        "flexible record recarray matrix",
        "numpy scalar or array type used as a value (dtype argument, class reference)",
    ),
    **_each("numpy.matrixlib.defmatrix", "matrix", "numpy matrix (an ndarray subclass; rebuilt as an array)"),
    **_each("numpy.rec", "recarray record", "numpy record array (an ndarray subclass; rebuilt as an array)"),
    **{
        (module, name): "numpy record array (an ndarray subclass; rebuilt as an array)"
        for module in ("numpy.core.records", "numpy._core.records")
        for name in ("recarray", "record")
    },
    **_each("numpy.ma", "MaskedArray", "numpy masked array (data and mask arrays)"),
    **_each("numpy.ma.core", "MaskedArray MaskedConstant", "numpy masked array (data and mask arrays)"),
    ("numpy.ma.core", "_mareconstruct"): "rebuilds a masked array from its class, base class and shape",
    **_each(
        "numpy.random._pickle",
        "__randomstate_ctor __generator_ctor __bit_generator_ctor",
        "rebuilds a numpy random generator by bit-generator name from a fixed table; state set by BUILD",
    ),
    **{
        (f"numpy.random._{module}", name): "numpy bit generator; __setstate__ restores its state dict"
        for module, name in (
            ("mt19937", "MT19937"),
            ("pcg64", "PCG64"),
            ("pcg64", "PCG64DXSM"),
            ("philox", "Philox"),
            ("sfc64", "SFC64"),
        )
    },
    ("numpy.random.mtrand", "RandomState"): "numpy random generator; state set by __setstate__",
    ("numpy.random._generator", "Generator"): "numpy random generator; state set by __setstate__",
    # torch operators as values: how torch.tanh and F.gelu & co. pickle
    ("torch._C", "_VariableFunctionsClass"): "namespace class of torch's operator functions (the base of "
    "getattr(_VariableFunctionsClass, 'tanh'), which is how torch.tanh pickles)",
    **{
        (module, f"{prefix}{name}"): _TORCH_OP
        for module, prefix in (("torch._C", "_VariableFunctionsClass."), ("torch", ""))
        for name in "abs acos asin atan atan2 add sub mul div true_divide floor_divide remainder fmod pow sqrt "
        "rsqrt exp exp2 expm1 log log2 log10 log1p sin cos tan sinh cosh tanh asinh acosh atanh sigmoid relu "
        "selu celu rrelu prelu hardshrink erf erfc erfinv sign neg reciprocal floor ceil round trunc frac clamp "
        "clip min max minimum maximum mean sum prod std var norm softmax log_softmax logsumexp matmul mm bmm "
        "einsum cat stack flatten transpose permute reshape squeeze unsqueeze where dropout layer_norm "
        "group_norm batch_norm instance_norm square lerp cumsum cumprod argmax argmin topk sort".split()
    },
    **_each(
        "torch._C._nn",
        "gelu silu mish hardswish hardsigmoid elu elu_ leaky_relu leaky_relu_ hardtanh hardtanh_ log_sigmoid "
        "softplus softshrink linear one_hot avg_pool2d avg_pool3d adaptive_avg_pool2d adaptive_avg_pool3d "
        "scaled_dot_product_attention cross_entropy_loss nll_loss mse_loss l1_loss smooth_l1_loss huber_loss "
        "binary_cross_entropy glu relu6 upsample_nearest2d upsample_bilinear2d pad",
        _TORCH_OP,
    ),
    **_each(
        "torch.nn.functional",
        "relu relu6 elu selu celu gelu silu mish hardswish hardsigmoid hardtanh leaky_relu logsigmoid softplus "
        "softsign softshrink tanhshrink sigmoid tanh softmax softmin log_softmax glu normalize dropout "
        "layer_norm group_norm cross_entropy nll_loss mse_loss l1_loss smooth_l1_loss huber_loss "
        "binary_cross_entropy binary_cross_entropy_with_logits kl_div cosine_similarity linear one_hot",
        _TORCH_OP,
    ),
    # Ecosystem reconstructors scripts/gen_ecosystem.py cannot clear on its own (it refuses calls of values
    # it does not name); reviewed by hand against pandas 3.1, scipy 1.17, xgboost 3.2 and transformers 5.25.
    **_each(
        "pandas.core.indexes.base",
        "_new_Index",
        "pandas' Index reconstructor: cls.__new__(cls, **d) on the index class the pickle names (judged on its "
        "own) with the pickled data",
    ),
    ("pandas.core.indexes.datetimes", "_new_DatetimeIndex"): "pandas' DatetimeIndex reconstructor: the index "
    "class the pickle names (judged on its own) builds itself from pickled arrays (_simple_new or __new__)",
    ("pandas.core.indexes.timedeltas", "_new_TimedeltaIndex"): "pandas' TimedeltaIndex reconstructor: the index "
    "class the pickle names (judged on its own) builds itself from pickled arrays (_simple_new or __new__)",
    ("pandas.core.internals.managers", "SingleBlockManager"): "a Series' block manager: __setstate__ rebuilds "
    "blocks from the pickled arrays and axes (extract_array, new_block); older layouts raise",
    **{
        (module, "SparseArray"): "pandas sparse array: __setstate__ updates __dict__ (or gives an empty ndarray "
        "its own pickled state, for pandas < 0.24 pickles)"
        for module in ("pandas.arrays", "pandas.core.arrays.sparse.array")
    },
    ("fsspec.spec", "make_instance"): "fsspec's file-system reconstructor: instantiates the file-system class "
    "the pickle names (judged on its own) with the pickled arguments",
    ("scipy.spatial.transform._rotation", "Rotation"): "rotation value: __setstate__ stores the pickled "
    "quaternion array after choosing its array namespace",
    ("xgboost.core", "Booster"): "xgboost model: __setstate__ hands the pickled model bytes to xgboost's own "
    "native library (XGBoosterUnserializeFromBuffer) through ctypes, by a fixed function name",
    **{
        (module, name): "Hugging Face tokenizer: no __setstate__, so BUILD's look-up reaches "
        "PreTrainedTokenizerBase.__getattr__, which raises AttributeError for names that are not special "
        "tokens; then __dict__ is updated"
        for module, name in (
            ("transformers.models.bert.tokenization_bert", "BertTokenizer"),
            ("transformers.tokenization_utils_tokenizers", "TokenizersBackend"),
        )
    },
    # torch utility objects of a training run
    ("torch.nn.utils.rnn", "PackedSequence"): "named tuple of tensors; __new__ checks and stores them",
    ("torch.utils.data.dataset", "TensorDataset"): "holds a tuple of tensors; __dict__ update",
    ("torch.optim.swa_utils", "AveragedModel"): "nn.Module wrapper holding the averaged copy; Module.__setstate__ "
    "updates its __dict__",
    ("torch.nn.modules.module", "_WrappedHook"): "holds a module hook (judged on its own) and, after "
    "__setstate__, a weak reference to its module",
    ("torch.nn.utils.weight_norm", "WeightNorm"): "weight-norm forward pre-hook: stores a parameter name and dim",
    **_each(
        "torch.nn.utils.spectral_norm",
        "SpectralNorm SpectralNormStateDictHook SpectralNormLoadStateDictPreHook",
        "spectral-norm hook: stores its settings (name, iterations, dim, eps)",
    ),
    ("torch.amp.grad_scaler", "GradScaler"): "mixed-precision loss scaler; __setstate__ updates its __dict__",
    ("torch.cuda.amp.grad_scaler", "GradScaler"): "mixed-precision loss scaler; __setstate__ updates its __dict__",
    ("torch.amp.grad_scaler", "_refresh_per_optimizer_state"): "default factory of the scaler's per-optimizer "
    "state: returns a fresh dict",
    ("torch.amp.grad_scaler", "OptState"): "enum of the scaler's per-optimizer stage",
    **{
        (f"torch.distributions.{module}", name): "probability distribution: its parameters (tensors) in __dict__"
        for module, name in (
            ("normal", "Normal"),
            ("uniform", "Uniform"),
            ("bernoulli", "Bernoulli"),
            ("categorical", "Categorical"),
            ("multivariate_normal", "MultivariateNormal"),
            ("beta", "Beta"),
            ("gamma", "Gamma"),
            ("dirichlet", "Dirichlet"),
            ("laplace", "Laplace"),
            ("exponential", "Exponential"),
            ("poisson", "Poisson"),
            ("binomial", "Binomial"),
            ("multinomial", "Multinomial"),
            ("one_hot_categorical", "OneHotCategorical"),
            ("log_normal", "LogNormal"),
            ("studentT", "StudentT"),
            ("independent", "Independent"),
            ("constraints", "_Real"),
            ("constraints", "_GreaterThan"),
            ("constraints", "_Interval"),
            ("constraints", "_Simplex"),
            ("constraints", "_Boolean"),
            ("constraints", "_IntegerInterval"),
        )
    },
}
