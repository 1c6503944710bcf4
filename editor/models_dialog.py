"""The Models dialog: every preset with its state, size and place on disk; download (progress,
speed, cancel, resume), delete, add a local folder or file, and which model each task uses.

A gated preset (the hub gives its files only to a logged-in account that accepted its licence) says so
before anything is fetched: in its status, in the line below the table, when it is chosen for a task, and
in a question when Download is pressed, naming the licence, the page to accept it on and `hf auth login`."""

from __future__ import annotations

import logging
from pathlib import Path

import threading

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from editor.generation import GenerationController
from editor.jobs import describe_progress, human_bytes
from editor.settings import Settings
from engines.api import SandcastleError, Task
from engines.services import default_model, delete_model, model_presets, model_status, remote_models

log = logging.getLogger(__name__)
COLUMNS = ("Model", "Tasks", "Status", "Size", "Location")
PICKLE_SUFFIXES = (".ckpt", ".bin", ".pt", ".pth")
GATED_STATE = "Not installed (gated: licence and log-in first)"
PARTLY_INSTALLED = "Installed without"


def gated_note(row: dict) -> str:
    """What a gated preset needs before it downloads, as one sentence."""
    return (f"{row['title']} is gated: the hub gives its files only to an account that accepted its licence. Before "
            f"downloading, {row['access']}.")


class ModelsDialog(QDialog):
    serverAnswered = Signal(object)  # the server's models (a list), or why it could not say (a string): from the asking thread

    def __init__(self, settings: Settings, generation: GenerationController, parent=None) -> None:
        super().__init__(parent)
        # With the engines on a server, the models are the server's: asked on a thread (the network may
        # be slow), listed when the answer comes; downloads, deletes and local files are the server's matter.
        self.remote = settings.remote
        self._server_rows: list[dict] = []
        self.serverAnswered.connect(self._on_server_answer)
        self.setObjectName("modelsDialog")
        self.setWindowTitle("Models")
        self.resize(980, 560)
        self.settings = settings
        self.generation = generation  # downloads run through it, so Generate knows when one is under way
        layout = QVBoxLayout(self)

        self.table = QTableWidget(0, len(COLUMNS), objectName="modelTable")
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(0, QHeaderView.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.Stretch)
        self.table.itemSelectionChanged.connect(self._update_buttons)
        layout.addWidget(self.table, 1)

        self.about = QLabel(objectName="modelAbout")
        self.about.setWordWrap(True)
        self.about.setTextInteractionFlags(Qt.TextSelectableByMouse)
        layout.addWidget(self.about)

        buttons = QHBoxLayout()
        self.download_button = QPushButton("&Download", objectName="downloadModel", clicked=self.download_selected)
        self.cancel_button = QPushButton("&Cancel download", objectName="cancelDownload", clicked=generation.cancel_download)
        self.delete_button = QPushButton("De&lete", objectName="deleteModel", clicked=self.delete_selected)
        self.add_folder_button = QPushButton("Add &folder…", objectName="addModelFolder", clicked=self.add_folder)
        self.add_file_button = QPushButton("Add f&ile…", objectName="addModelFile", clicked=self.add_file)
        for b in (self.download_button, self.cancel_button, self.delete_button, self.add_folder_button, self.add_file_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.progress = QProgressBar(objectName="downloadProgress")
        self.progress.setVisible(False)
        layout.addWidget(self.progress)
        self.message = QLabel(objectName="modelsMessage")
        self.message.setWordWrap(True)
        layout.addWidget(self.message)

        choose = QGroupBox("Model used for each task")
        self.task_form = QFormLayout(choose)
        self.task_combos: dict[str, QComboBox] = {}
        for task in Task:
            combo = QComboBox(objectName=f"modelFor_{task.value}")
            combo.currentIndexChanged.connect(lambda _, t=task.value: self._task_model_chosen(t))
            self.task_combos[task.value] = combo
            self.task_form.addRow(task.value.capitalize(), combo)
        layout.addWidget(choose)
        close = QDialogButtonBox(QDialogButtonBox.Close, rejected=self.reject)
        close.button(QDialogButtonBox.Close).clicked.connect(self.accept)
        layout.addWidget(close)

        generation.downloadProgress.connect(self._on_progress)
        generation.downloadFinished.connect(self._on_download_done)
        generation.downloadFailed.connect(self._on_download_failed)
        generation.downloadCancelled.connect(self._on_download_cancelled)
        generation.busyChanged.connect(self._update_buttons)
        if self.remote:
            for button in (self.download_button, self.delete_button, self.add_folder_button, self.add_file_button):
                button.setVisible(False)
            self.message.setText(f"Asking the server at {self.remote} which models it has…")
            token = settings["remote_token"]
            threading.Thread(target=self._ask_server, args=(self.remote, token), daemon=True, name="models-on-server").start()
        self.refresh()

    def _ask_server(self, url: str, token: str) -> None:
        try:
            answer: object = remote_models(url, token)
        except SandcastleError as exc:
            answer = str(exc)
        self.serverAnswered.emit(answer)  # queued to the GUI thread

    def _on_server_answer(self, answer: object) -> None:
        if isinstance(answer, str):
            self.message.setText(answer)
            return
        self._server_rows = [{"name": m["name"], "title": m.get("title") or m["name"], "tasks": ", ".join(m.get("tasks", ())), "hub_id": None,
                              "components": (), "licence": m.get("licence", ""), "estimate": 0, "about": m.get("about", "on the server"),
                              "manual": "", "server": True, "installed": bool(m.get("installed"))} for m in answer]
        self.message.setText(f"The models of the server at {self.remote}; the server downloads one that is not there on first use.")
        self.refresh()

    # ---- rows ---------------------------------------------------------------------------------

    def rows(self) -> list[dict]:
        if self.remote:
            return self._server_rows
        rows = []
        for p in model_presets():
            rows.append({"name": p.id, "title": p.title, "tasks": ", ".join(p.tasks), "hub_id": p.hub_id, "components": p.components,
                         "licence": p.licence, "estimate": p.download_bytes, "about": p.description, "manual": p.manual,
                         "access": p.access_steps()})
        for local in self.settings["local_models"]:
            rows.append({"name": local["path"], "title": local.get("title") or Path(local["path"]).name, "tasks": "any",
                         "hub_id": None, "components": (), "licence": "", "estimate": 0, "about": local["path"], "manual": "", "local": True})
        return rows

    def refresh(self) -> None:
        selected = self.selected_name()
        self._rows = self.rows()
        self.table.setRowCount(len(self._rows))
        for r, row in enumerate(self._rows):
            status, size, where = self._state(row)
            row["state"] = status
            for c, text in enumerate((row["title"], row["tasks"], status, size, where)):
                item = QTableWidgetItem(text)
                item.setToolTip(row["about"] + (f"\n{gated_note(row)}" if row.get("access") else ""))
                self.table.setItem(r, c, item)
            if row["name"] == selected:
                self.table.selectRow(r)
        self._fill_task_combos()
        self._update_buttons()

    def _state(self, row: dict) -> tuple[str, str, str]:
        if row.get("server"):
            return ("On the server" if row["installed"] else "Downloaded by the server when first used"), "", self.remote
        if row["hub_id"] is None and not row.get("local"):
            return "Not installed (see below)", f"about {human_bytes(row['estimate'])}", ""
        try:
            status = model_status(row["name"], tuple(self.settings["pickle_allowed"]))
        except SandcastleError as exc:
            return f"Unavailable: {exc}", "", row["name"]
        if row["hub_id"] and self.generation.downloading == row["hub_id"]:
            return "Downloading…", f"about {human_bytes(row['estimate'])}", ""
        if status.tasks:
            row["tasks"] = ", ".join(status.tasks)
            row["about"] = status.title
        if status.base and not status.installed:  # a transformer file whose preset's text encoder and VAE are not here yet
            return (f"Needs the text encoder and VAE of {status.base} (Generate offers to download them without its transformer)",
                    human_bytes(status.disk_bytes), status.path or "")
        if status.unusable:
            return f"Cannot be used: {status.unusable}", human_bytes(status.disk_bytes), status.path or ""
        if status.installed:
            return "Installed", human_bytes(status.disk_bytes), status.path or ""
        if status.without:  # fetched for a transformer file: Delete removes it, Download completes it
            return f"{PARTLY_INSTALLED} its {', '.join(status.without)} (serves transformer files)", human_bytes(status.disk_bytes), status.path or ""
        if row.get("access"):
            return GATED_STATE, f"about {human_bytes(row['estimate'])}", ""
        return "Not installed", f"about {human_bytes(row['estimate'])}", ""

    def selected_row(self) -> dict | None:
        rows = self.table.selectionModel().selectedRows() if self.table.selectionModel() else []
        return self._rows[rows[0].row()] if rows else None

    def selected_name(self) -> str | None:
        row = self.selected_row() if hasattr(self, "_rows") else None
        return row["name"] if row else None

    def select(self, name: str) -> None:
        for r, row in enumerate(self._rows):
            if row["name"] == name:
                self.table.selectRow(r)

    def _update_buttons(self, *_) -> None:
        row = self.selected_row()
        busy = self.generation.downloading is not None
        installed = row is not None and row.get("state") == "Installed"
        self.download_button.setEnabled(bool(row and row["hub_id"]) and not busy and not installed)
        self.cancel_button.setEnabled(busy)
        partly = row is not None and row.get("state", "").startswith(PARTLY_INSTALLED)
        self.delete_button.setEnabled(bool(row) and (installed or partly or row.get("local", False)) and not busy)
        if row:
            extra = f"\n{row['manual']}" if row["manual"] else ""
            gated = f"\n{gated_note(row)}" if row.get("access") and row.get("state") != "Installed" else ""
            licence = f" Licence: {row['licence']}." if row["licence"] else ""
            self.about.setText(f"{row['title']}: {row['about']}{licence}{extra}{gated}")

    # ---- actions ------------------------------------------------------------------------------

    def download_selected(self) -> None:
        row = self.selected_row()
        if row and row["hub_id"]:
            if row.get("access") and not self.confirm(
                f"{gated_note(row)}\n\nWithout both, the hub refuses the download. Download {row['title']} now "
                f"(about {human_bytes(row['estimate'])})?"
            ):
                self.message.setText(f"{row['title']} was not downloaded: {gated_note(row)}")
                return
            self.message.setText("")
            self.generation.download(row["hub_id"], tuple(row["components"]))
            self.progress.setVisible(True)
            self.progress.setRange(0, 0)
            self.refresh()

    def delete_selected(self) -> None:
        row = self.selected_row()
        if row is None:
            return
        if row.get("local"):
            self.settings["local_models"] = [m for m in self.settings["local_models"] if m["path"] != row["name"]]
            self.settings.save()
            self.message.setText(f"Removed {row['title']} from the list (its files were not touched).")
        elif self.confirm(f"Delete {row['title']} from this computer? It can be downloaded again later."):
            freed = delete_model(row["hub_id"])
            self.message.setText(f"Deleted {row['title']}, freeing {human_bytes(freed)}.")
        self.refresh()

    def add_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a diffusers model folder")
        if folder:
            self.add_local(folder)

    def add_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Choose a checkpoint", "", "Checkpoints and transformers (*.safetensors *.gguf *.ckpt *.bin *.pt *.pth)")
        if path:
            self.add_local(path)

    def add_local(self, path: str) -> bool:
        """Add a folder or single file; pickle-based files need the person's explicit, per-file consent."""
        allowed = tuple(self.settings["pickle_allowed"])
        if path.lower().endswith(PICKLE_SUFFIXES):
            if not self.confirm(
                f"{Path(path).name} is a pickle-based checkpoint. Pickle files can run code when loaded. Sandcastle "
                "reads it in PyTorch's weights-only mode, which refuses code, but only use files from sources you trust. "
                "Allow this file?"
            ):
                return False
            allowed += (str(Path(path).resolve()),)
        try:
            status = model_status(path, allowed)
        except SandcastleError as exc:
            self.message.setText(str(exc))
            return False
        if tuple(self.settings["pickle_allowed"]) != allowed:
            self.settings["pickle_allowed"] = list(allowed)
        if all(m["path"] != path for m in self.settings["local_models"]):
            self.settings["local_models"] = self.settings["local_models"] + [{"path": path, "title": Path(path).name}]
        self.settings.save()
        self.refresh()
        self.select(path)
        self.message.setText(status.unusable or f"Added {Path(path).name}. Choose it below for the tasks it should do.")
        return True

    def confirm(self, text: str) -> bool:
        return QMessageBox.question(self, "Models", text, QMessageBox.Yes | QMessageBox.No, QMessageBox.No) == QMessageBox.Yes

    # ---- which model per task -----------------------------------------------------------------

    def _fill_task_combos(self) -> None:
        for task, combo in self.task_combos.items():
            combo.blockSignals(True)
            combo.clear()
            if self.remote:
                combo.addItem("The server's default", "")  # what a job without a model name gets there
            for row in self._rows:
                served = {t.split(" ")[0] for t in row["tasks"].split(", ")}  # "edit (img2img)" serves edit
                if row.get("state", "").startswith("Cannot be used"):
                    continue
                if task in served or row["tasks"] == "any":
                    combo.addItem(row["title"], row["name"])
            try:
                current = self.settings.model_for(task) or ("" if self.remote else default_model(task))
            except SandcastleError:
                current = None
            index = combo.findData(current)
            combo.setCurrentIndex(max(index, 0))
            combo.blockSignals(False)

    def _task_model_chosen(self, task: str) -> None:
        name = self.task_combos[task].currentData()
        self.settings.set_model_for(task, name)
        self.settings.save()
        row = next((r for r in self._rows if r["name"] == name), None)
        if row and row.get("access") and row.get("state") != "Installed":
            self.message.setText(f"{row['title']} will be used for {task}. {gated_note(row)}")
        elif " will be used for " in self.message.text():  # the note of a gated model chosen before: no longer true
            self.message.setText("")

    # ---- download progress --------------------------------------------------------------------

    def _on_progress(self, hub_id: str, p: object) -> None:
        self.progress.setVisible(True)
        self.progress.setRange(0, 1000)
        self.progress.setValue(int(1000 * p.done_bytes / max(1, p.total_bytes)))
        self.progress.setFormat(describe_progress(hub_id, p))

    def _on_download_done(self, hub_id: str, path: str) -> None:
        self.progress.setVisible(False)
        self.message.setText(f"{hub_id} is installed.")
        self.refresh()

    def _on_download_failed(self, hub_id: str, message: str) -> None:
        self.progress.setVisible(False)
        self.message.setText(message)
        self.refresh()

    def _on_download_cancelled(self, hub_id: str) -> None:
        self.progress.setVisible(False)
        self.message.setText(f"Download of {hub_id} cancelled; it will resume where it stopped.")
        self.refresh()
