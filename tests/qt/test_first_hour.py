"""What a newcomer meets in the first hour: each task keeps its own words, every Generate makes a new
picture unless the seed is locked, the History says which seed made a result, and a task shows only
the controls it uses."""

from tests.qt.conftest import open_window, paint_stroke


def switch(qtbot, win, task):
    win.panel.task.setCurrentIndex(win.panel.task.findData(task))
    qtbot.waitUntil(lambda: win.panel.spec is not None and win.panel.spec.id == task and win.panel.generate.isEnabled(), timeout=60000)


def test_each_task_keeps_its_own_prompt_negative_and_guidance(qtbot, tmp_path, photo):
    win = open_window(qtbot, tmp_path, photo, "--demo")
    try:
        panel = win.panel
        panel.prompt.setPlainText("a red door")
        panel.negative.setPlainText("blurry")
        panel.guidance_value.setValue(11.0)
        switch(qtbot, win, "edit")
        assert panel.prompt.toPlainText() == "" and panel.negative.toPlainText() == "" and panel.guidance_value.value() == 7.5
        assert "instruction" in panel.prompt.placeholderText()
        panel.prompt.setPlainText("make it winter")
        switch(qtbot, win, "inpaint")
        assert (panel.prompt.toPlainText(), panel.negative.toPlainText(), panel.guidance_value.value()) == ("a red door", "blurry", 11.0)
        assert win.document.generation["prompt"] == "a red door"  # what Generate sends is this task's prompt
        switch(qtbot, win, "edit")
        assert panel.prompt.toPlainText() == "make it winter"
    finally:
        win.shutdown()


def test_every_generate_takes_a_new_seed_unless_locked_and_history_names_it(qtbot, tmp_path, photo):
    win = open_window(qtbot, tmp_path, photo, "--demo", steps=2)
    try:
        panel, stack = win.panel, win.document.undo_stack
        panel.prompt.setPlainText("a red door")
        paint_stroke(qtbot, win, [(200, 200), (260, 240)])
        seeds = []
        for _ in range(2):
            with qtbot.waitSignal(win.generation.finished, timeout=120000):
                win.generation.generate()
            seeds.append(panel.seed.value())
            assert stack.text(stack.index() - 1).endswith(f"(seed {seeds[-1]})")
        assert seeds[0] != seeds[1]
        panel.lock_seed.setChecked(True)
        with qtbot.waitSignal(win.generation.finished, timeout=120000):
            win.generation.generate()
        assert panel.seed.value() == seeds[1] and stack.text(stack.index() - 1) == f"Inpaint: a red door (seed {seeds[1]})"
    finally:
        win.shutdown()


def test_attributes_show_only_their_own_controls_and_history_names_the_sliders(qtbot, tmp_path, photo):
    win = open_window(qtbot, tmp_path, photo, "--demo")
    try:
        panel = win.panel
        panel.prompt.setPlainText("a bunch of sunflowers")
        switch(qtbot, win, "attributes")
        for row in (panel.prompt, panel.negative, panel.guidance_row, panel.strength, panel.steps, panel.seed_row, panel.versions):
            assert not panel.form.isRowVisible(row)
        assert not panel.param_widgets["attributes"].isVisibleTo(panel) and not panel.param_widgets["region_size"].isVisibleTo(panel)
        qtbot.waitUntil(lambda: panel.param_widgets["render_steps"].isVisibleTo(panel) and panel.param_widgets["alignment"].isVisibleTo(panel),
                        timeout=10000)
        panel.param_widgets["alignment"].setCurrentIndex(panel.param_widgets["alignment"].findText("square"))
        panel.param_widgets["inversion_steps"].setValue(10)
        panel.param_widgets["render_steps"].setValue(5)
        win.attributes.box.sliders["Smiling"].setValue(30)
        with qtbot.waitSignal(win.generation.finished, timeout=120000):
            win.generation.generate()
        assert win.document.undo_stack.text(0) == "Attributes: Smiling=0.3"  # not the prompt of another task
        switch(qtbot, win, "inpaint")
        assert panel.form.isRowVisible(panel.prompt) and panel.prompt.toPlainText() == "a bunch of sunflowers"
    finally:
        win.shutdown()


def test_a_hand_edited_settings_file_with_wrong_values_still_opens_the_window(qtbot, tmp_path, photo, monkeypatch):
    import json

    from editor.settings import config_path

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    config_path().parent.mkdir(parents=True)
    config_path().write_text(json.dumps({"schema": 2, "mask_opacity": "half", "autosave_seconds": 1e20, "hint_opacity": 0.4}))
    win = open_window(qtbot, tmp_path, photo, "--demo")
    try:
        assert "mask_opacity, autosave_seconds" in win.panel.message.text()
        assert win.menu_actions.mask_opacity.value() == 50 and win.canvas.hints_item.opacity() == 0.4
    finally:
        win.shutdown()


def test_hints_hide_over_a_result_and_come_back_with_the_hint_tool(qtbot, tmp_path, photo):
    win = open_window(qtbot, tmp_path, photo, "--demo", steps=2)
    try:
        switch(qtbot, win, "colorize")
        win.menu_actions.hint.trigger()
        paint_stroke(qtbot, win, [(100, 400), (200, 400)])
        assert win.canvas.hints_item.isVisible() and win.document.has_hints
        with qtbot.waitSignal(win.generation.finished, timeout=120000):
            win.generation.generate()
        assert not win.canvas.hints_item.isVisible() and not win.canvas.mask_item.isVisible()  # the result itself is shown
        win.document.undo_stack.undo()
        win.document.undo_stack.redo()
        assert not win.canvas.hints_item.isVisible() and not win.menu_actions.show_hints.isChecked()  # undo and redo leave them hidden
        win.menu_actions.show_hints.trigger()  # Shift+H
        assert win.canvas.hints_item.isVisible()
        win.menu_actions.show_hints.trigger()
        win.menu_actions.brush.trigger()
        win.menu_actions.hint.trigger()  # picking the Hint tool brings them back
        assert win.canvas.hints_item.isVisible() and win.menu_actions.show_hints.isChecked()
        win.menu_actions.set_hint_opacity(30)
        assert win.canvas.hints_item.opacity() == 0.3 and win.settings["hint_opacity"] == 0.3
    finally:
        win.shutdown()


def test_loading_a_model_says_so_with_the_seconds_it_takes(qtbot, tmp_path, photo):
    from engines import models

    win = open_window(qtbot, tmp_path, photo, "--demo", steps=2)
    try:
        models.CACHE.clear()  # as after a fresh start: the model must be read from disk
        stages = []
        win.generation.stepped.connect(lambda job_id, step: step.stage and stages.append(win.panel.progress.format()))
        win.panel.prompt.setPlainText("a red door")
        paint_stroke(qtbot, win, [(200, 200), (260, 240)])
        with qtbot.waitSignal(win.generation.finished, timeout=120000):
            win.generation.generate()
        assert stages and stages[0].startswith("Loading inpaint…")  # the demo model's folder
        assert win.panel.progress.format().startswith("Done")
    finally:
        win.shutdown()
