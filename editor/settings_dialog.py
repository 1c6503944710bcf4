"""Settings: device, precision, low-memory mode, an optional hub mirror, the largest picture to open and the autosave interval."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QComboBox, QDialog, QDialogButtonBox, QFormLayout, QLabel, QLineEdit, QSpinBox

from editor.settings import CHOICES, Settings

LABELS = {
    "device": ("Device", "auto: CUDA, then Apple MPS, then the CPU; remote: a Sandcastle server (sandcastle serve) on a GPU machine."),
    "precision": ("Precision", "auto: float16 on graphics cards, float32 on the CPU."),
    "memory": ("Low-memory mode", "auto chooses from the free graphics memory: off (fastest), balanced, lowest. Stable Diffusion: "
                                  "balanced is attention slicing and VAE tiling, lowest adds model CPU offload. FLUX and Qwen: "
                                  "balanced is model CPU offload, lowest is group offload, and auto may also run the transformer "
                                  "8-bit (a Q8_0 copy made once)."),
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
        self.remote_url = QLineEdit(settings["remote_url"], objectName="setting_remote_url")
        self.remote_url.setPlaceholderText("http://gpu-box:8000")
        self.remote_url.setToolTip("The address `sandcastle serve` printed on the GPU machine. The engines run there; the picture, "
                                   "mask and settings of each job are sent to it, and every step streams back.")
        form.addRow("Remote server", self.remote_url)
        self.remote_token = QLineEdit(settings["remote_token"], objectName="setting_remote_token")
        self.remote_token.setEchoMode(QLineEdit.Password)
        self.remote_token.setPlaceholderText("none")
        self.remote_token.setToolTip("The token the server was started with (--token), if any.")
        form.addRow("Server token", self.remote_token)
        self.combos["device"].currentTextChanged.connect(self._remote_fields)
        self._remote_fields(self.combos["device"].currentText())
        self.endpoint = QLineEdit(settings["hub_endpoint"], objectName="setting_hub_endpoint")
        self.endpoint.setPlaceholderText("https://huggingface.co")
        self.endpoint.setToolTip("A Hugging Face hub mirror to download from; empty for the hub itself.")
        form.addRow("Hub address", self.endpoint)
        self.max_megapixels = QSpinBox(objectName="setting_max_megapixels", minimum=1, maximum=2000, suffix=" million pixels")
        self.max_megapixels.setValue(int(settings["max_megapixels"]))
        self.max_megapixels.setToolTip("Larger pictures are refused when opened, before they fill the memory.")
        form.addRow("Largest picture", self.max_megapixels)
        self.autosave = QSpinBox(objectName="setting_autosave_seconds", minimum=0, maximum=3600, suffix=" s")
        self.autosave.setSpecialValueText("Only on exit")
        self.autosave.setValue(int(settings["autosave_seconds"]))
        self.autosave.setToolTip("How often the open work is saved aside, to restore it after a crash.")
        form.addRow("Autosave every", self.autosave)
        self.compile = QCheckBox("Compile the model (torch.compile)", objectName="setting_compile_unet")
        self.compile.setChecked(bool(settings["compile_unet"]))
        self.compile.setToolTip("Faster denoising steps on a graphics card. The first generation at each picture shape compiles the model (a minute or "
                                "more; the progress bar says so); the result is kept in the cache folder for the next start.")
        form.addRow("Speed", self.compile)
        note = QLabel("Changes apply to the next generation (the autosave interval from the next start).")
        form.addRow(note)
        buttons = QDialogButtonBox(QDialogButtonBox.Save | QDialogButtonBox.Cancel, accepted=self.save, rejected=self.reject)
        form.addRow(buttons)

    def _remote_fields(self, device: str) -> None:
        for widget in (self.remote_url, self.remote_token):
            widget.setEnabled(device == "remote")

    def save(self) -> None:
        url = self.remote_url.text().strip().rstrip("/")
        if self.combos["device"].currentText() == "remote" and not url.startswith(("http://", "https://")):
            self.remote_url.setFocus()
            self.remote_url.setToolTip("The server's address starts with http:// or https://, like http://gpu-box:8000.")
            self.remote_url.setStyleSheet("border: 1px solid #d04040;")
            return
        self.settings["remote_url"], self.settings["remote_token"] = url, self.remote_token.text().strip()
        for key, combo in self.combos.items():
            self.settings[key] = combo.currentText()
        self.settings["hub_endpoint"] = self.endpoint.text().strip()
        self.settings["max_megapixels"] = self.max_megapixels.value()
        self.settings["autosave_seconds"] = self.autosave.value()
        self.settings["compile_unet"] = self.compile.isChecked()
        self.settings.save()
        self.accept()
