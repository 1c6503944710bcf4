"""Settings: device, precision, low-memory mode and an optional hub mirror."""

from __future__ import annotations

from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit

from editor.settings import CHOICES, Settings

LABELS = {
    "device": ("Device", "auto: CUDA, then Apple MPS, then the CPU."),
    "precision": ("Precision", "auto: float16 on graphics cards, float32 on the CPU."),
    "memory": ("Low-memory mode", "auto chooses from the free graphics memory: off (fastest), balanced (attention slicing and "
                                  "VAE tiling), lowest (model CPU offload as well)."),
}


class SettingsDialog(QDialog):
    def __init__(self, settings: Settings, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("settingsDialog")
        self.setWindowTitle("Settings")
        self.settings = settings
        form = QFormLayout(self)
        self.combos: dict[str, QComboBox] = {}
        for key, (label, tip) in LABELS.items():
            combo = QComboBox(objectName=f"setting_{key}")
            combo.addItems(list(CHOICES[key]))
            combo.setCurrentText(settings[key])
            combo.setToolTip(tip)
            self.combos[key] = combo
            form.addRow(label, combo)
        self.endpoint = QLineEdit(settings["hub_endpoint"], objectName="setting_hub_endpoint")
        self.endpoint.setPlaceholderText("https://huggingface.co")
        self.endpoint.setToolTip("A Hugging Face hub mirror to download from; empty for the hub itself.")
        form.addRow("Hub address", self.endpoint)
        note = QLabel("Changes apply to the next generation.")
        form.addRow(note)
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel, accepted=self.save, rejected=self.reject)
        form.addRow(buttons)

    def save(self) -> None:
        for key, combo in self.combos.items():
            self.settings[key] = combo.currentText()
        self.settings["hub_endpoint"] = self.endpoint.text().strip()
        self.settings.save()
        self.accept()
