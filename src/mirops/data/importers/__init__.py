"""Importers: OpenMIC-2018, MagnaTagATune and a folder + CSV, each into the manifest contract.

Each has a pure table step (label files → manifest rows, no audio; `*_table`) and an import that checks the
audio, quarantines bad clips and writes the dataset folder atomically (`import_*`).
"""

from mirops.data.importers.common import ImportSummary, ImportTable
from mirops.data.importers.folder import folder_table, import_folder
from mirops.data.importers.mtat import import_mtat, mtat_table
from mirops.data.importers.openmic import import_openmic, openmic_table

__all__ = [
    "ImportSummary", "ImportTable", "folder_table", "import_folder", "import_mtat", "import_openmic", "mtat_table",
    "openmic_table",
]
