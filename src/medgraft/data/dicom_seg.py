"""Masks of DICOM series as DICOM Segmentation objects (DICOM-SEG), written with highdicom, so
PACS viewers, OHIF and 3D Slicer show them on the source series.

One segment per foreground class, named from the model's labels (``dataset.json``); frame ``k``
of the mask is slice ``k`` of the series in volume order (``dicom.series_datasets``), so each
frame references its source slice and carries its position. Empty frames are left out, as
highdicom does by default.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medgraft.data.dicom import series_datasets
from medgraft.files import atomic_write


def _fill_slice_thickness(sources: list) -> None:
    """highdicom reads SliceThickness from the source, which many series lack: the in-memory
    copies get the spacing between slices (1 mm for a single slice); files are not touched."""
    if all(d.get("SliceThickness") for d in sources):
        return
    positions = [np.asarray(d.ImagePositionPatient, dtype=float) for d in sources[:2]]
    gap = float(np.linalg.norm(positions[1] - positions[0])) if len(sources) > 1 else 1.0
    for dataset in sources:
        if not dataset.get("SliceThickness"):
            dataset.SliceThickness = f"{gap:.6g}"


def write_dicom_seg(
    mask: np.ndarray, series: Path, target: Path, label_names: dict[int, str]
) -> None:
    """Write ``mask`` (rows, columns, slices; values are class indices) on ``series`` as a
    binary DICOM-SEG at ``target`` (written under a temporary name, then renamed)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import medgraft

    algorithm = hd.AlgorithmIdentificationSequence(
        name="medgraft",
        version=medgraft.__version__,
        family=codes.cid7162.ArtificialIntelligence,
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=value,
            segment_label=name,
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.AnatomicalStructure,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for value, name in sorted(label_names.items())
        if value > 0
    ]
    sources = series_datasets(series)
    _fill_slice_thickness(sources)
    segmentation = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=np.ascontiguousarray(np.moveaxis(mask.astype(np.uint8), -1, 0)),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber") or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="medgraft",
        manufacturer_model_name="medgraft",
        software_versions=medgraft.__version__,
        device_serial_number="none",
        series_description="medgraft segmentation",
    )
    atomic_write(target, lambda tmp: segmentation.save_as(str(tmp)))
