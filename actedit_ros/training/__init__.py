"""EditAction training: dataset folders, the EditAction objective, ``actedit-train`` and ``actedit-make-dataset``."""
