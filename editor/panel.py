"""The side panel: task, prompt, sampling controls, the engine's own parameters, Generate/Cancel, progress."""

from __future__ import annotations

import random
import time
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from engines.api import EngineSpec, ModelControls, ParamSpec

GUIDANCE_STEP = 0.5  # the slider's notch; its range and meaning come from the model (set_model_controls)
ASPECTS = (("Free", None), ("1:1", 1.0), ("4:3", 4 / 3), ("3:2", 1.5), ("16:9", 16 / 9), ("2:1", 2.0), ("3:4", 0.75), ("9:16", 9 / 16))
MAX_SEED = 2**31 - 1
PLACEHOLDERS = {  # what each task wants in its prompt
    "inpaint": "What should appear in the painted area",
    "uncrop": "What the wider scene shows, like \u201ca beach at sunset\u201d",
    "edit": "An instruction, like \u201cmake it winter\u201d",
    "colorize": "The colours, like \u201cred car, blue sky\u201d (optional)",
}
DEFAULT_GUIDANCE = 7.5  # a task's guidance until the person sets one
STEPS_HELP = "Denoising steps: more is slower and usually finer."


def time_left(seconds: float) -> str:
    whole = max(1, round(seconds))
    return f"{whole} s" if whole < 60 else f"{whole // 60} min {whole % 60:02d} s"


class GeneratePanel(QWidget):
    generateRequested = Signal()
    cancelRequested = Signal()
    taskChanged = Signal(str)

    def __init__(self, tasks: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("generatePanel")
        self.setMinimumWidth(300)
        self.setMaximumWidth(420)
        # The settings scroll; Generate, Cancel, the progress bar and the message stay pinned below
        # them, so on a 768-pixel screen they are always in view whatever the task shows.
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        self.scroll = QScrollArea(objectName="panelScroll")
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.settings_area = QWidget(objectName="panelSettings")
        self.scroll.setWidget(self.settings_area)
        outer.addWidget(self.scroll, 1)
        layout = self.settings_layout = QVBoxLayout(self.settings_area)

        self.banner = QLabel()
        self.banner.setObjectName("banner")
        self.banner.setWordWrap(True)
        self.banner.setStyleSheet("background:#6b4e00;color:white;padding:6px;border-radius:4px;")
        self.banner.setVisible(False)
        layout.addWidget(self.banner)

        form = self.form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.AllNonFixedFieldsGrow)
        self.task = QComboBox(objectName="task")
        for name in tasks:
            self.task.addItem(name.capitalize(), name)
        self.task.currentIndexChanged.connect(self._on_task_index)
        form.addRow("&Task", self.task)

        self.prompt = QPlainTextEdit(objectName="prompt")
        self.prompt.setPlaceholderText("What should appear in the painted area")
        self.prompt.setFixedHeight(72)
        self.prompt.setTabChangesFocus(True)
        form.addRow("&Prompt", self.prompt)
        self.negative = QPlainTextEdit(objectName="negativePrompt")
        self.negative.setPlaceholderText("What to avoid (optional)")
        self.negative.setFixedHeight(48)
        self.negative.setTabChangesFocus(True)
        form.addRow("&Negative", self.negative)

        # Guidance: a slider for feel, a spin box for exact values; each follows the other.
        self.guidance = QSlider(Qt.Horizontal, objectName="guidanceScale")
        self.guidance.setPageStep(2)
        self.guidance_value = QDoubleSpinBox(objectName="guidanceScaleValue")
        self.guidance_value.setSingleStep(GUIDANCE_STEP)
        self.guidance_value.setDecimals(1)
        self.guidance.valueChanged.connect(lambda v: self.guidance_value.setValue(v * GUIDANCE_STEP))
        self.guidance_value.valueChanged.connect(lambda v: self.guidance.setValue(round(v / GUIDANCE_STEP)))
        self.guidance.setValue(15)
        row = self.guidance_row = QHBoxLayout()
        row.addWidget(self.guidance, 1)
        row.addWidget(self.guidance_value)
        self.guidance_label = _buddy("&Guidance", self.guidance)
        form.addRow(self.guidance_label, row)

        self.strength = QDoubleSpinBox(objectName="strength")
        self.strength.setRange(0.01, 1.0)
        self.strength.setSingleStep(0.05)
        self.strength.setValue(1.0)
        self.strength.setToolTip("How much of the painted area is replaced: 1 repaints it completely.")
        form.addRow("St&rength", self.strength)
        self.steps = QSpinBox(objectName="steps")
        self.steps.setRange(1, 150)
        self.steps.setValue(25)
        form.addRow("&Steps", self.steps)
        self.seed = QSpinBox(objectName="seed")
        self.seed.setRange(0, MAX_SEED)
        self.seed.setValue(random.randint(0, 99999))
        self.seed.setToolTip("The same seed and settings give the same picture.")
        self.random_seed = QToolButton(objectName="randomSeed", text="Random")
        self.random_seed.setToolTip("New random seed")
        self.random_seed.clicked.connect(lambda: self.seed.setValue(random.randint(0, MAX_SEED)))
        # As in A1111 and Krita, every Generate takes a new seed unless it is locked; the seed each
        # result used is in its History entry and version tooltip, so any result can be made again.
        self.lock_seed = QCheckBox("Lock", objectName="lockSeed")
        self.lock_seed.setToolTip("Keep this seed for the next Generate instead of a new one each time")
        row = self.seed_row = QHBoxLayout()
        row.addWidget(self.seed, 1)
        row.addWidget(self.random_seed)
        row.addWidget(self.lock_seed)
        form.addRow(_buddy("S&eed", self.seed), row)
        self.versions = QSpinBox(objectName="versions", minimum=1, maximum=8, value=1)
        self.versions.setToolTip("How many versions to make, with successive seeds; they appear under the canvas to pick from.")
        form.addRow("&Versions", self.versions)
        layout.addLayout(form)

        # Uncrop's frame by ratio; the sides themselves are the engine's own parameters below.
        self.frame_box = QGroupBox("Frame", objectName="frameBox")
        frame_form = QFormLayout(self.frame_box)
        self.aspect = QComboBox(objectName="aspect")
        for text, ratio in ASPECTS:
            self.aspect.addItem(text, ratio)
        self.aspect.setToolTip("Grow the picture to this shape (or drag the canvas edges)")
        self.anchor = QComboBox(objectName="anchor")
        for text in ("centre", "left", "right", "top", "bottom"):
            self.anchor.addItem(text.capitalize(), text)
        self.anchor.setToolTip("Where the original stays inside the new frame")
        frame_form.addRow(_buddy("As&pect", self.aspect), self.aspect)
        frame_form.addRow(_buddy("Anc&hor", self.anchor), self.anchor)
        self.frame_box.setVisible(False)
        layout.addWidget(self.frame_box)

        self.engine_box = QGroupBox("Settings", objectName="engineSettings")
        self.engine_form = QFormLayout(self.engine_box)
        self.engine_form.addRow(QLabel("Loading the engine…"))
        layout.addWidget(self.engine_box)
        self.param_widgets: dict[str, QWidget] = {}
        self.spec: EngineSpec | None = None
        self.set_model_controls(ModelControls())  # Stable Diffusion's (guidance range and help, steps help) until a model says otherwise

        layout.addStretch(1)
        pinned = QVBoxLayout()
        pinned.setContentsMargins(9, 0, 9, 9)
        outer.addLayout(pinned)
        layout = pinned
        buttons = QHBoxLayout()
        self.generate = QPushButton("Generate", objectName="generate")
        self.generate.setDefault(True)
        self.generate.setToolTip("Generate (Ctrl+Enter)")
        self.generate.setEnabled(False)
        self.generate.clicked.connect(self.generateRequested)
        self.cancel = QPushButton("Cancel", objectName="cancel")
        self.cancel.setEnabled(False)
        self.cancel.setToolTip("Cancel generating (Esc); the picture stays as it was")
        self.cancel.clicked.connect(self.cancelRequested)
        buttons.addWidget(self.generate, 2)
        buttons.addWidget(self.cancel, 1)
        layout.addLayout(buttons)
        self.progress = QProgressBar(objectName="progress")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("Ready")
        layout.addWidget(self.progress)
        self.message = QLabel(objectName="message")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.message.setSizePolicy(QSizePolicy.Preferred, QSizePolicy.Minimum)
        layout.addWidget(self.message)
        self._busy = False
        self._stage: tuple[str, float] | None = None  # the stage shown, and when it began
        self._stage_timer = QTimer(self, interval=1000)
        self._stage_timer.timeout.connect(self._tick_stage)
        self._showing = False  # True while the widgets are being set from the document
        self.document = None  # set by bind()

    # ---- values -----------------------------------------------------------------------------

    def current_task(self) -> str:
        return self.task.currentData()

    def aspect_ratio(self) -> float | None:
        return self.aspect.currentData()

    def guidance_scale(self) -> float:
        return self.guidance.value() * GUIDANCE_STEP

    def bind(self, document: Any) -> None:
        """Show and edit `document.generation`: the widgets keep no state of their own (ARCHITECTURE),
        so autosave, restore and Generate all read the document."""
        self.document = document
        for signal in (self.prompt.textChanged, self.negative.textChanged, self.guidance_value.valueChanged,
                       self.steps.valueChanged, self.seed.valueChanged, self.versions.valueChanged, self.lock_seed.toggled):
            signal.connect(self._push)
        self.strength.valueChanged.connect(self._push_strength)
        document.generationChanged.connect(self._show_document)
        self._push()

    def _on_task_index(self, _: int) -> None:
        task = self.current_task()
        self._show_words(task)
        if self.document is not None:
            g = self.document.generation
            words = g.get("words", {}).get(task)
            if words is None and g.get("task") == task:  # an autosave from before words were kept per task
                words = {"prompt": g.get("prompt", ""), "negative": g.get("negative", ""), "guidance": g.get("guidance", DEFAULT_GUIDANCE)}
            self._showing = True  # each task keeps its own words: "make it winter" is no inpainting prompt
            try:
                self.prompt.setPlainText(words["prompt"] if words else "")
                self.negative.setPlainText(words["negative"] if words else "")
                self.guidance_value.setValue(words["guidance"] if words else DEFAULT_GUIDANCE)
            finally:
                self._showing = False
            self._push()  # the document knows the new task before anyone reacts to the switch
        self.taskChanged.emit(task)

    def _show_words(self, task: str) -> None:
        self.prompt.setPlaceholderText(PLACEHOLDERS.get(task, "What the result should show"))

    def _push(self, *_) -> None:
        if not self._showing:
            task = self.current_task()
            self.document.set_generation(task=task, prompt=self.prompt.toPlainText(), negative=self.negative.toPlainText(),
                                         guidance=self.guidance_scale(), steps=self.steps.value(), seed=self.seed.value(),
                                         versions=self.versions.value(), seed_locked=self.lock_seed.isChecked())
            self.document.set_task_value("words", task, None, {"prompt": self.prompt.toPlainText(), "negative": self.negative.toPlainText(),
                                                               "guidance": self.guidance_scale()})

    def _push_strength(self, value: float) -> None:
        if not self._showing and self.spec is not None and self.spec.id == self.current_task():
            self.document.set_task_value("strength", self.spec.id, None, value)

    def _show_document(self) -> None:
        """Bring the widgets in line with the document (after a restore); only what differs is set."""
        if self._showing:
            return
        g = self.document.generation
        self._showing = True
        try:
            for widget, key in ((self.prompt, "prompt"), (self.negative, "negative")):
                if isinstance(g.get(key), str) and widget.toPlainText() != g[key]:
                    widget.setPlainText(g[key])
            for widget, key in ((self.guidance_value, "guidance"), (self.steps, "steps"), (self.seed, "seed"), (self.versions, "versions")):
                if g.get(key) is not None and widget.value() != g[key]:
                    widget.setValue(g[key])
            if isinstance(g.get("seed_locked"), bool) and self.lock_seed.isChecked() != g["seed_locked"]:
                self.lock_seed.setChecked(g["seed_locked"])
            if self.spec is not None and self.spec.id == self.current_task():
                strength = g.get("strength", {}).get(self.spec.id)
                if isinstance(strength, (int, float)) and self.strength.value() != strength:
                    self.strength.setValue(float(strength))
                for name, value in self.document.task_params(self.spec.id).items():
                    widget = self.param_widgets.get(name)
                    if widget is not None and _value_of(widget) != value:
                        _set_value(widget, value)
        finally:
            self._showing = False
        index = self.task.findData(g.get("task"))
        if index >= 0 and index != self.task.currentIndex():
            self.task.setCurrentIndex(index)  # last, and not blocked: the window loads that task's engine, which shows its settings

    def set_engine_spec(self, spec: EngineSpec) -> None:
        """Build a control for each of the engine's own parameters, showing the values the document
        holds for this task (set before, or restored), else the defaults."""
        for widget in self.param_widgets.values():
            widget.blockSignals(True)  # a combo box being destroyed still says its index changed
        hidden = [w for name, w in self.param_widgets.items() if self.spec is not None and not self.spec.param(name).panel]
        while self.engine_form.rowCount():
            self.engine_form.removeRow(0)  # deletes the widgets in the rows
        for widget in hidden:  # in no row: deleted here
            widget.deleteLater()
        self.param_widgets.clear()
        self.spec = spec
        self._showing = True  # the document is being filled from these controls, not the other way round
        try:
            self._build_params(spec)
        finally:
            self._showing = False
        for widget in self.param_widgets.values():  # controls that matter only for some choices follow them
            for signal in ("currentIndexChanged", "toggled"):
                if hasattr(widget, signal):
                    getattr(widget, signal).connect(self._update_applicable)
        self._update_applicable()
        self._update_buttons()

    def _build_params(self, spec: EngineSpec) -> None:
        saved = self.document.task_params(spec.id)
        strength = self.document.generation.get("strength", {}).get(spec.id, spec.default_strength)
        self.strength.setValue(float(strength) if isinstance(strength, (int, float)) else spec.default_strength)
        for p in spec.params:
            widget = _control_for(p)
            if p.name in saved:
                _set_value(widget, saved[p.name])  # a stored value of the wrong type leaves the default
            widget.setObjectName(f"param_{p.name}")
            widget.setToolTip(p.help)
            self.param_widgets[p.name] = widget
            if p.panel:
                self.engine_form.addRow(p.label, widget)
            else:  # set by a control of its own (the sliders, the square on the canvas): kept for its value only
                widget.setParent(self.engine_box)
                widget.hide()
            self.document.set_task_value("params", spec.id, p.name, _value_of(widget))
            _changed_signal(widget).connect(lambda *_, name=p.name, w=widget: self.document.set_task_value("params", spec.id, name, _value_of(w)))
        self.document.set_task_value("strength", spec.id, None, self.strength.value())

    def _update_applicable(self, *_) -> None:
        values = self.params()
        for p in self.spec.params:
            if p.when is not None:
                self.param_widgets[p.name].setEnabled(values.get(p.when[0]) == p.when[1])
        controls = {"prompt": self.prompt, "negative": self.negative, "guidance": self.guidance, "strength": self.strength,
                    "steps": self.steps, "seed": self.seed}
        rows = {"guidance": self.guidance_row, "seed": self.seed_row}
        model = self.model_controls
        read = {"guidance": model.guidance is not None, "negative": model.negative}  # what the chosen model does with them
        for name, widget in controls.items():  # only the controls this task and its model use are shown
            used = name in self.spec.common and read.get(name, True)
            widget.setEnabled(used)
            self.form.setRowVisible(rows.get(name, widget), used)
        self.guidance_value.setEnabled("guidance" in self.spec.common and model.guidance is not None)
        scheduler = self.param_widgets.get("scheduler")
        if scheduler is not None:
            self.engine_form.setRowVisible(scheduler, model.scheduler)
        self.random_seed.setEnabled("seed" in self.spec.common)
        self.versions.setEnabled("seed" in self.spec.common)  # versions differ by seed; without one they would all be the same
        self.form.setRowVisible(self.versions, "seed" in self.spec.common)
        self.engine_box.setVisible(any(p.panel for p in self.spec.params))
        rule = self.spec.strength_when
        self.strength.setEnabled("strength" in self.spec.common and (rule is None or values.get(rule[0]) == rule[1]))

    def set_model_controls(self, controls: ModelControls) -> None:
        """Show the controls the chosen model uses, labelled with what they mean to it (FLUX's distilled
        guidance, Qwen's true CFG, none for FLUX.2 [klein]); Stable Diffusion uses them all."""
        self.model_controls = controls
        if controls.guidance is not None:
            label, help, minimum, maximum = controls.guidance
            self.guidance_label.setText(f"&{label}")
            for widget in (self.guidance, self.guidance_value):
                widget.setToolTip(help)
            self.guidance.setRange(int(minimum / GUIDANCE_STEP), int(maximum / GUIDANCE_STEP))
            self.guidance_value.setRange(minimum, maximum)
        self.steps.setToolTip(f"{STEPS_HELP} {controls.steps_help}".strip())
        if self.spec is not None:
            self._update_applicable()

    def params(self) -> dict[str, Any]:
        """The current engine's parameters, as the document holds them."""
        saved = self.document.task_params(self.current_task())
        return {name: saved.get(name, _value_of(widget)) for name, widget in self.param_widgets.items()}

    # ---- state ------------------------------------------------------------------------------

    def set_busy(self, busy: bool) -> None:
        self._busy = busy
        self._update_buttons()
        if busy:
            self.progress.setRange(0, 0)  # indeterminate until the first step arrives
            self.progress.setFormat("Preparing…")
            self.show_message("")

    def _update_buttons(self) -> None:
        self.generate.setEnabled(not self._busy and self.spec is not None)
        self.cancel.setEnabled(self._busy)

    def show_step(self, step: int, total: int, seconds: float, pass_index: int = 1, passes: int = 1, phase: str = "") -> None:
        self.progress.setRange(0, total * passes)
        self.progress.setValue((pass_index - 1) * total + step)
        stage = f"Pass {pass_index}/{passes} · " if passes > 1 else ""
        stage += f"{phase} · " if phase else ""
        remaining = (passes - pass_index) * total + (total - step)  # one bar over every pass, with the time they all have left
        left = f" · about {time_left(remaining * seconds)} left" if remaining and seconds > 0 else ""
        self.progress.setFormat(f"{stage}Step {step}/{total} · {seconds:.2f} s/step{left}")

    def show_stage(self, text: str) -> None:
        """What takes time before the first step (loading or compiling the model), with a busy bar and
        the seconds it has taken so far, so a long wait is seen to be moving."""
        self.progress.setRange(0, 0)
        self.progress.setFormat(text)
        self._stage = (text, time.monotonic())
        self._stage_timer.start()

    def _tick_stage(self) -> None:
        if self._stage is None or self.progress.format() != self._stage[0] and not self.progress.format().startswith(self._stage[0] + " "):
            self._stage_timer.stop()  # a step, Done or a failure replaced the stage
            self._stage = None
            return
        self.progress.setFormat(f"{self._stage[0]} {time.monotonic() - self._stage[1]:.0f} s")

    def show_done(self, text: str) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if text.startswith("Done") else 0)
        self.progress.setFormat(text)

    def show_message(self, text: str, error: bool = False) -> None:
        self.message.setStyleSheet("color:#d33;" if error else "")
        self.message.setText(text)


class SliderField(QWidget):
    """A slider for feel and a spin box for the exact value, kept in step: a float setting's control."""

    valueChanged = Signal(float)

    def __init__(self, minimum: float, maximum: float, step: float, value: float) -> None:
        super().__init__()
        self.step = step
        row = QHBoxLayout(self)
        row.setContentsMargins(0, 0, 0, 0)
        self.slider = QSlider(Qt.Horizontal)
        self.slider.setRange(round(minimum / step), round(maximum / step))
        self.spin = QDoubleSpinBox()
        self.spin.setRange(minimum, maximum)
        self.spin.setSingleStep(step)
        self.spin.setDecimals(max(0, len(f"{step:g}".partition(".")[2])))
        self.slider.valueChanged.connect(lambda v: self.spin.setValue(v * self.step))
        self.spin.valueChanged.connect(lambda v: self.slider.setValue(round(v / self.step)))
        self.spin.valueChanged.connect(self.valueChanged)
        row.addWidget(self.slider, 1)
        row.addWidget(self.spin)
        self.setValue(value)
        self.setFocusProxy(self.slider)

    def value(self) -> float:
        return self.spin.value()

    def setValue(self, value: float) -> None:
        self.spin.setValue(value)


def _buddy(text: str, widget: QWidget) -> QLabel:
    """A row label whose &-mnemonic focuses `widget` (QFormLayout only does this for single widgets)."""
    label = QLabel(text)
    label.setBuddy(widget)
    return label


def _control_for(p: ParamSpec) -> QWidget:
    if p.choices:
        w = QComboBox()
        w.addItems(list(p.choices))
        w.setCurrentText(str(p.default))
        return w
    if p.type is bool:
        w = QCheckBox()
        w.setChecked(bool(p.default))
        return w
    if p.type is int:
        w = QSpinBox()
        w.setRange(int(p.minimum if p.minimum is not None else -(2**31)), int(p.maximum if p.maximum is not None else 2**31 - 1))
        w.setSingleStep(int(p.step or 1))
        w.setSpecialValueText(p.special_value)
        w.setValue(int(p.default))
        return w
    if p.type is float and p.minimum is not None and p.maximum is not None:
        return SliderField(p.minimum, p.maximum, p.step or 0.1, float(p.default))
    if p.type is float:
        w = QDoubleSpinBox()
        w.setRange(p.minimum if p.minimum is not None else -1e9, p.maximum if p.maximum is not None else 1e9)
        w.setSingleStep(p.step or 0.1)
        w.setDecimals(2)
        w.setValue(float(p.default))
        return w
    return QLineEdit(str(p.default))


def _value_of(w: QWidget) -> Any:
    if isinstance(w, QComboBox):
        return w.currentText()
    if isinstance(w, QCheckBox):
        return w.isChecked()
    if isinstance(w, (QSpinBox, QDoubleSpinBox, SliderField)):
        return w.value()
    return w.text()


def _set_value(w: QWidget, value: Any) -> None:
    """Set a parameter control from a stored value, ignoring values of the wrong type."""
    if isinstance(w, QComboBox) and isinstance(value, str) and w.findText(value) >= 0:
        w.setCurrentText(value)
    elif isinstance(w, QCheckBox) and isinstance(value, bool):
        w.setChecked(value)
    elif isinstance(w, (QSpinBox, QDoubleSpinBox, SliderField)) and isinstance(value, (int, float)) and not isinstance(value, bool):
        w.setValue(int(value) if isinstance(w, QSpinBox) else float(value))
    elif isinstance(w, QLineEdit) and isinstance(value, str):
        w.setText(value)


def _changed_signal(w: QWidget):
    """The signal that says the control's value changed (for a combo box the one _update_applicable also
    hears, so the document is up to date when the other controls follow it)."""
    if isinstance(w, QComboBox):
        return w.currentIndexChanged
    if isinstance(w, QCheckBox):
        return w.toggled
    if isinstance(w, QLineEdit):
        return w.textChanged
    return w.valueChanged
