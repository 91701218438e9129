"""Implements the tessera-stac Embedding Extension (``embedding:``), in pystac's own style.

The extension describes geospatial embedding rasters and how to dequantise their stored codes
from metadata alone. Schema, field tables and examples: ``schemas/`` (packaged as
``tessera_stac.schemas``); the schema file is :func:`schema_path`.

.. code-block:: python

    >>> ext = EmbeddingExtension.ext(item, add_if_missing=True)
    >>> ext.apply(EmbeddingType.PIXEL, 128, "tessera", "v1")
    >>> EmbeddingExtension.ext(item.assets["embeddings"]).quantization = Quantization.per_pixel(
    ...     "scales", nodata=-128
    ... )
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, cast

import pystac
from pystac.extensions.base import (
    ExtensionManagementMixin,
    PropertiesExtension,
    SummariesExtension,
)
from pystac.extensions.hooks import ExtensionHooks
from pystac.utils import StringEnum, map_opt

from tessera_stac.catalog.errors import InputError

#: Generalised version of the objects the extension applies to.
T = TypeVar("T", pystac.Item, pystac.Asset, pystac.ItemAssetDefinition, pystac.Collection)

SCHEMA_URI: str = "https://tessera-stac.github.io/embedding/v1.0.0/schema.json"
PREFIX: str = "embedding:"

TYPE_PROP: str = PREFIX + "type"
DIMENSIONS_PROP: str = PREFIX + "dimensions"
CHIP_SIZE_PROP: str = PREFIX + "chip_size"
MODEL_NAME_PROP: str = PREFIX + "model_name"
MODEL_VERSION_PROP: str = PREFIX + "model_version"
TEMPORAL_WINDOW_PROP: str = PREFIX + "temporal_window"
SIMILARITY_PROP: str = PREFIX + "similarity"
NORMALIZED_PROP: str = PREFIX + "normalized"
QUANTIZATION_PROP: str = PREFIX + "quantization"

#: Role of an asset holding embedding codes (the schema requires a quantization on it).
EMBEDDINGS_ROLE: str = "embeddings"


def schema_path() -> Path:
    """Path of the packaged JSON schema (``tessera_stac.schemas/json-schema/schema.json``)."""
    return Path(str(files("tessera_stac.schemas").joinpath("json-schema", "schema.json")))


class EmbeddingType(StringEnum):
    """What one vector stands for."""

    PIXEL = "pixel"
    CHIP = "chip"


class SimilarityMetric(StringEnum):
    """The metric vectors are meant to be compared with."""

    COSINE = "cosine"
    DOT = "dot"
    EUCLIDEAN = "euclidean"
    MANHATTAN = "manhattan"


class QuantizationMethod(StringEnum):
    """How stored codes become values (formulas in :class:`Quantization`)."""

    NONE = "none"
    LINEAR = "linear"
    PER_PIXEL_SCALE = "per-pixel-scale"
    SIGNED_SQUARE = "signed-square"


class QuantizationScope(StringEnum):
    """What one dequantisation parameter applies to."""

    GLOBAL = "global"
    BAND = "band"
    PIXEL = "pixel"


NumberOrNan = float | int | str


def _num(value: NumberOrNan | None) -> float | None:
    """``"nan"``/``"inf"``/``"-inf"`` or a number, as a float (None stays None)."""
    return None if value is None else float(value)


def _json_num(value: float | int | None) -> NumberOrNan | None:
    """A float for JSON: NaN and infinities become the strings the schema allows."""
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    return value


@dataclass(frozen=True)
class Quantization:
    """The ``embedding:quantization`` object: how codes ``q`` become values ``v``.

    * ``none``: ``v = q``.
    * ``linear``: ``v = q * scale + offset``; scalars (scope ``global``) or one value per
      dimension (scope ``band``).
    * ``per-pixel-scale``: ``v = q * s`` where ``s`` is band ``scale_band`` of asset
      ``scale_asset`` at the same pixel (scope ``pixel``: one scale for all dimensions).
    * ``signed-square`` (AlphaEarth): ``v = sign(q) * (|q| / divisor) ** exponent``.

    A pixel is invalid when any of its codes equals ``nodata``, or (per-pixel-scale) when its
    scale equals ``scale_nodata`` (NaN matches NaN), is not finite, or lies outside the open
    interval ``scale_valid_range``. Values are computed in ``dtype``.
    """

    method: QuantizationMethod
    scope: QuantizationScope
    dtype: str = "float32"
    nodata: float | int | None = None
    quantized_dtype: str | None = None
    original_dtype: str | None = None
    scale: float | tuple[float, ...] | None = None
    offset: float | tuple[float, ...] | None = None
    scale_asset: str | None = None
    scale_band: int | None = None
    scale_nodata: float | None = None
    scale_valid_range: tuple[float, float] | None = None
    divisor: float | None = None
    exponent: float | None = None

    @classmethod
    def none(cls, nodata: float | int | None = None, dtype: str = "float32") -> Quantization:
        """Values are stored as they are."""
        return cls(QuantizationMethod.NONE, QuantizationScope.GLOBAL, dtype, nodata)

    @classmethod
    def linear(
        cls,
        scale: float | Iterable[float],
        offset: float | Iterable[float] = 0.0,
        nodata: float | int | None = None,
        quantized_dtype: str | None = None,
        dtype: str = "float32",
    ) -> Quantization:
        """``v = q * scale + offset``; iterables mean one value per dimension."""
        per_band = not isinstance(scale, int | float)
        scope = QuantizationScope.BAND if per_band else QuantizationScope.GLOBAL

        def norm(v: float | Iterable[float]) -> float | tuple[float, ...]:
            if per_band:
                if isinstance(v, int | float):
                    raise ValueError("scale and offset must both be scalars or both arrays")
                return tuple(float(x) for x in v)
            if not isinstance(v, int | float):
                raise ValueError("scale and offset must both be scalars or both arrays")
            return float(v)

        return cls(
            QuantizationMethod.LINEAR,
            scope,
            dtype,
            nodata,
            quantized_dtype=quantized_dtype,
            scale=norm(scale),
            offset=norm(offset),
        )

    @classmethod
    def per_pixel(
        cls,
        scale_asset: str,
        nodata: float | int | None = None,
        scale_nodata: float = math.nan,
        scale_band: int | None = None,
        scale_valid_range: tuple[float, float] | None = None,
        quantized_dtype: str | None = None,
        original_dtype: str | None = None,
        dtype: str = "float32",
    ) -> Quantization:
        """``v = q * s`` with ``s`` read per pixel from asset ``scale_asset``."""
        return cls(
            QuantizationMethod.PER_PIXEL_SCALE,
            QuantizationScope.PIXEL,
            dtype,
            nodata,
            quantized_dtype=quantized_dtype,
            original_dtype=original_dtype,
            scale_asset=scale_asset,
            scale_band=scale_band,
            scale_nodata=scale_nodata,
            scale_valid_range=scale_valid_range,
        )

    @classmethod
    def signed_square(
        cls,
        divisor: float = 127.5,
        exponent: float = 2.0,
        nodata: float | int | None = -128,
        quantized_dtype: str | None = "int8",
        dtype: str = "float32",
    ) -> Quantization:
        """AlphaEarth's scheme: ``v = sign(q) * (|q| / divisor) ** exponent``."""
        return cls(
            QuantizationMethod.SIGNED_SQUARE,
            QuantizationScope.GLOBAL,
            dtype,
            nodata,
            quantized_dtype=quantized_dtype,
            divisor=divisor,
            exponent=exponent,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON object (NaN written as ``"nan"``; unset fields left out)."""
        out: dict[str, Any] = {
            "method": self.method.value,
            "scope": self.scope.value,
            "dtype": self.dtype,
            "nodata": _json_num(self.nodata),
        }
        optional: dict[str, Any] = {
            "quantized_dtype": self.quantized_dtype,
            "original_dtype": self.original_dtype,
            "scale": list(self.scale) if isinstance(self.scale, tuple) else self.scale,
            "offset": list(self.offset) if isinstance(self.offset, tuple) else self.offset,
            "scale_asset": self.scale_asset,
            "scale_band": self.scale_band,
            "scale_nodata": _json_num(self.scale_nodata),
            "scale_valid_range": map_opt(list, self.scale_valid_range),
            "divisor": self.divisor,
            "exponent": self.exponent,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Quantization:
        """Parse the JSON object; raises InputError naming the bad field."""
        try:
            method = QuantizationMethod(d["method"])
            scope = QuantizationScope(d["scope"])
        except KeyError as exc:
            raise InputError(f"{QUANTIZATION_PROP} lacks the required field {exc}") from None
        except ValueError as exc:
            raise InputError(f"{QUANTIZATION_PROP}: {exc}") from None

        def num_or_tuple(v: Any) -> float | tuple[float, ...] | None:
            if v is None:
                return None
            if isinstance(v, list | tuple):
                return tuple(float(x) for x in v)
            return float(v)

        nodata = d.get("nodata")
        vrange = d.get("scale_valid_range")
        return cls(
            method=method,
            scope=scope,
            dtype=str(d.get("dtype", "float32")),
            nodata=_num(nodata) if isinstance(nodata, str) else nodata,
            quantized_dtype=d.get("quantized_dtype"),
            original_dtype=d.get("original_dtype"),
            scale=num_or_tuple(d.get("scale")),
            offset=num_or_tuple(d.get("offset")),
            scale_asset=d.get("scale_asset"),
            scale_band=d.get("scale_band"),
            scale_nodata=_num(d.get("scale_nodata")),
            scale_valid_range=(float(vrange[0]), float(vrange[1])) if vrange else None,
            divisor=map_opt(float, d.get("divisor")),
            exponent=map_opt(float, d.get("exponent")),
        )


class EmbeddingExtension(
    Generic[T],
    PropertiesExtension,
    ExtensionManagementMixin[pystac.Item | pystac.Collection],
):
    """Extends Items, Assets, item_assets definitions and Collections with ``embedding:`` fields.

    Use :meth:`EmbeddingExtension.ext` to get the right concrete class:

    .. code-block:: python

        >>> ext = EmbeddingExtension.ext(item, add_if_missing=True)
        >>> ext.dimensions
        128
    """

    name: Literal["embedding"] = "embedding"

    def apply(
        self,
        type: EmbeddingType | None = None,
        dimensions: int | None = None,
        model_name: str | None = None,
        model_version: str | None = None,
        temporal_window: str | None = None,
        similarity: SimilarityMetric | None = None,
        normalized: bool | None = None,
        quantization: Quantization | None = None,
        chip_size: tuple[int, int] | None = None,
    ) -> None:
        """Set the extension's fields (None leaves a field out).

        Args:
            type: pixel or chip embeddings (REQUIRED on Items).
            dimensions: length of each vector (REQUIRED on Items).
            model_name: model name, matching the model Item's ``mlm:name`` (REQUIRED on Items).
            model_version: model version or variant (REQUIRED on Items).
            temporal_window: ISO 8601 duration each vector summarises, e.g. ``P1Y``.
            similarity: the metric vectors are compared with.
            normalized: whether dequantised vectors have unit L2 norm.
            quantization: how to dequantise the codes (REQUIRED on assets with role
                ``embeddings``).
            chip_size: ``(rows, cols)`` of a chip (REQUIRED when type is chip).
        """
        self.type = type
        self.dimensions = dimensions
        self.model_name = model_name
        self.model_version = model_version
        self.temporal_window = temporal_window
        self.similarity = similarity
        self.normalized = normalized
        self.quantization = quantization
        self.chip_size = chip_size

    @property
    def type(self) -> EmbeddingType | None:
        """Gets or sets the embedding type (pixel or chip)."""
        return map_opt(EmbeddingType, self._get_property(TYPE_PROP, str))

    @type.setter
    def type(self, v: EmbeddingType | None) -> None:
        self._set_property(TYPE_PROP, map_opt(lambda x: EmbeddingType(x).value, v))

    @property
    def dimensions(self) -> int | None:
        """Gets or sets the number of dimensions of each vector."""
        return self._get_property(DIMENSIONS_PROP, int)

    @dimensions.setter
    def dimensions(self, v: int | None) -> None:
        self._set_property(DIMENSIONS_PROP, v)

    @property
    def chip_size(self) -> tuple[int, int] | None:
        """Gets or sets the chip size ``(rows, cols)`` of chip embeddings."""
        value = self._get_property(CHIP_SIZE_PROP, list[int])
        return (int(value[0]), int(value[1])) if value else None

    @chip_size.setter
    def chip_size(self, v: tuple[int, int] | None) -> None:
        self._set_property(CHIP_SIZE_PROP, map_opt(list, v))

    @property
    def model_name(self) -> str | None:
        """Gets or sets the model name (the model Item's ``mlm:name``)."""
        return self._get_property(MODEL_NAME_PROP, str)

    @model_name.setter
    def model_name(self, v: str | None) -> None:
        self._set_property(MODEL_NAME_PROP, v)

    @property
    def model_version(self) -> str | None:
        """Gets or sets the model version or variant."""
        return self._get_property(MODEL_VERSION_PROP, str)

    @model_version.setter
    def model_version(self, v: str | None) -> None:
        self._set_property(MODEL_VERSION_PROP, v)

    @property
    def temporal_window(self) -> str | None:
        """Gets or sets the ISO 8601 duration each vector summarises (e.g. ``P1Y``)."""
        return self._get_property(TEMPORAL_WINDOW_PROP, str)

    @temporal_window.setter
    def temporal_window(self, v: str | None) -> None:
        self._set_property(TEMPORAL_WINDOW_PROP, v)

    @property
    def similarity(self) -> SimilarityMetric | None:
        """Gets or sets the similarity metric."""
        return map_opt(SimilarityMetric, self._get_property(SIMILARITY_PROP, str))

    @similarity.setter
    def similarity(self, v: SimilarityMetric | None) -> None:
        self._set_property(SIMILARITY_PROP, map_opt(lambda x: SimilarityMetric(x).value, v))

    @property
    def normalized(self) -> bool | None:
        """Gets or sets whether dequantised vectors have unit L2 norm."""
        return self._get_property(NORMALIZED_PROP, bool)

    @normalized.setter
    def normalized(self, v: bool | None) -> None:
        self._set_property(NORMALIZED_PROP, v)

    @property
    def quantization(self) -> Quantization | None:
        """Gets or sets the dequantisation recipe (:class:`Quantization`)."""
        return map_opt(Quantization.from_dict, self._get_property(QUANTIZATION_PROP, dict))

    @quantization.setter
    def quantization(self, v: Quantization | None) -> None:
        self._set_property(QUANTIZATION_PROP, map_opt(lambda q: q.to_dict(), v))

    @classmethod
    def get_schema_uri(cls) -> str:
        """The extension's schema identifier."""
        return SCHEMA_URI

    @classmethod
    def ext(cls, obj: T, add_if_missing: bool = False) -> EmbeddingExtension[T]:
        """Extend an Item, Asset, ItemAssetDefinition or Collection with ``embedding:`` fields.

        Raises:
            pystac.ExtensionTypeError: for any other object.
            pystac.ExtensionNotImplemented: when the owner does not declare the extension and
                ``add_if_missing`` is False.
        """
        if isinstance(obj, pystac.Item):
            cls.ensure_has_extension(obj, add_if_missing)
            return cast(EmbeddingExtension[T], ItemEmbeddingExtension(obj))
        if isinstance(obj, pystac.Asset):
            cls.ensure_owner_has_extension(obj, add_if_missing)
            return cast(EmbeddingExtension[T], AssetEmbeddingExtension(obj))
        if isinstance(obj, pystac.ItemAssetDefinition):
            cls.ensure_owner_has_extension(obj, add_if_missing)
            return cast(EmbeddingExtension[T], ItemAssetsEmbeddingExtension(obj))
        if isinstance(obj, pystac.Collection):
            cls.ensure_has_extension(obj, add_if_missing)
            return cast(EmbeddingExtension[T], CollectionEmbeddingExtension(obj))
        raise pystac.ExtensionTypeError(cls._ext_error_message(obj))

    @classmethod
    def summaries(
        cls, obj: pystac.Collection, add_if_missing: bool = False
    ) -> SummariesEmbeddingExtension:
        """The extended summaries of a Collection."""
        cls.ensure_has_extension(obj, add_if_missing)
        return SummariesEmbeddingExtension(obj)


class ItemEmbeddingExtension(EmbeddingExtension[pystac.Item]):
    """:class:`EmbeddingExtension` on an Item's properties (use :meth:`EmbeddingExtension.ext`)."""

    item: pystac.Item
    properties: dict[str, Any]

    def __init__(self, item: pystac.Item) -> None:
        self.item = item
        self.properties = item.properties

    def __repr__(self) -> str:
        return f"<ItemEmbeddingExtension Item id={self.item.id}>"


class AssetEmbeddingExtension(EmbeddingExtension[pystac.Asset]):
    """:class:`EmbeddingExtension` on an Asset; reads fall back to the owning Item's fields."""

    asset_href: str
    properties: dict[str, Any]
    additional_read_properties: Iterable[dict[str, Any]] | None = None

    def __init__(self, asset: pystac.Asset) -> None:
        self.asset_href = asset.href
        self.properties = asset.extra_fields
        if asset.owner and isinstance(asset.owner, pystac.Item):
            self.additional_read_properties = [asset.owner.properties]

    def __repr__(self) -> str:
        return f"<AssetEmbeddingExtension Asset href={self.asset_href}>"


class ItemAssetsEmbeddingExtension(EmbeddingExtension[pystac.ItemAssetDefinition]):
    """:class:`EmbeddingExtension` on a Collection's ``item_assets`` definition."""

    properties: dict[str, Any]
    asset_defn: pystac.ItemAssetDefinition

    def __init__(self, item_asset: pystac.ItemAssetDefinition) -> None:
        self.asset_defn = item_asset
        self.properties = item_asset.properties

    def __repr__(self) -> str:
        return "<ItemAssetsEmbeddingExtension>"


class CollectionEmbeddingExtension(EmbeddingExtension[pystac.Collection]):
    """:class:`EmbeddingExtension` on a Collection's top-level fields."""

    collection: pystac.Collection
    properties: dict[str, Any]

    def __init__(self, collection: pystac.Collection) -> None:
        self.collection = collection
        self.properties = collection.extra_fields

    def __repr__(self) -> str:
        return f"<CollectionEmbeddingExtension Collection id={self.collection.id}>"


class SummariesEmbeddingExtension(SummariesExtension):
    """``embedding:`` fields in a Collection's ``summaries`` (lists of values)."""

    @property
    def type(self) -> list[EmbeddingType] | None:
        """Gets or sets the embedding types of the Collection's Items."""
        return map_opt(lambda v: [EmbeddingType(x) for x in v], self.summaries.get_list(TYPE_PROP))

    @type.setter
    def type(self, v: list[EmbeddingType] | None) -> None:
        self._set_summary(TYPE_PROP, map_opt(lambda x: [EmbeddingType(e).value for e in x], v))

    @property
    def dimensions(self) -> list[int] | None:
        """Gets or sets the vector lengths found in the Collection."""
        return self.summaries.get_list(DIMENSIONS_PROP)

    @dimensions.setter
    def dimensions(self, v: list[int] | None) -> None:
        self._set_summary(DIMENSIONS_PROP, v)

    @property
    def model_name(self) -> list[str] | None:
        """Gets or sets the model names found in the Collection."""
        return self.summaries.get_list(MODEL_NAME_PROP)

    @model_name.setter
    def model_name(self, v: list[str] | None) -> None:
        self._set_summary(MODEL_NAME_PROP, v)

    @property
    def model_version(self) -> list[str] | None:
        """Gets or sets the model versions found in the Collection."""
        return self.summaries.get_list(MODEL_VERSION_PROP)

    @model_version.setter
    def model_version(self, v: list[str] | None) -> None:
        self._set_summary(MODEL_VERSION_PROP, v)

    @property
    def temporal_window(self) -> list[str] | None:
        """Gets or sets the temporal windows found in the Collection."""
        return self.summaries.get_list(TEMPORAL_WINDOW_PROP)

    @temporal_window.setter
    def temporal_window(self, v: list[str] | None) -> None:
        self._set_summary(TEMPORAL_WINDOW_PROP, v)

    @property
    def similarity(self) -> list[SimilarityMetric] | None:
        """Gets or sets the similarity metrics found in the Collection."""
        return map_opt(
            lambda v: [SimilarityMetric(x) for x in v], self.summaries.get_list(SIMILARITY_PROP)
        )

    @similarity.setter
    def similarity(self, v: list[SimilarityMetric] | None) -> None:
        self._set_summary(
            SIMILARITY_PROP, map_opt(lambda x: [SimilarityMetric(e).value for e in x], v)
        )

    @property
    def normalized(self) -> list[bool] | None:
        """Gets or sets the normalisation flags found in the Collection."""
        return self.summaries.get_list(NORMALIZED_PROP)

    @normalized.setter
    def normalized(self, v: list[bool] | None) -> None:
        self._set_summary(NORMALIZED_PROP, v)

    @property
    def quantization(self) -> list[Quantization] | None:
        """Gets or sets the quantisation recipes found in the Collection."""
        return map_opt(
            lambda v: [Quantization.from_dict(x) for x in v],
            self.summaries.get_list(QUANTIZATION_PROP),
        )

    @quantization.setter
    def quantization(self, v: list[Quantization] | None) -> None:
        self._set_summary(QUANTIZATION_PROP, map_opt(lambda x: [q.to_dict() for q in x], v))


class EmbeddingExtensionHooks(ExtensionHooks):
    """pystac hooks: lets pystac recognise the extension on Items and Collections."""

    schema_uri: str = SCHEMA_URI
    prev_extension_ids: set[str] = {"embedding"}  # noqa: RUF012 (pystac's hook convention)
    stac_object_types: set[pystac.STACObjectType] = {  # noqa: RUF012
        pystac.STACObjectType.ITEM,
        pystac.STACObjectType.COLLECTION,
    }


EMBEDDING_EXTENSION_HOOKS: ExtensionHooks = EmbeddingExtensionHooks()

if SCHEMA_URI not in pystac.EXTENSION_HOOKS.hooks:
    pystac.EXTENSION_HOOKS.add_extension_hooks(EMBEDDING_EXTENSION_HOOKS)
