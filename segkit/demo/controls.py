"""Gradio controls built from a backend's declared options and its models.yaml selectors.

Each control knows how to turn the page's value back into a predict option, so a tab's run
function never needs to know which backend it serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..registry import get_spec, list_models, selectors


@dataclass
class Control:
    """One input on the page: ``kind`` 'option' (a predict option), 'select' (picks the model),
    'model' (a model menu, for backends without selectors) or 'alpha' (the overlay's opacity)."""

    kind: str
    name: str
    component: object
    option: object = None

    def value(self, raw):
        """The page's value as the option wants it (None: leave it to the model)."""
        option = self.option
        if option is None or raw is None:
            return raw
        if option.type in ("int", "float") and isinstance(raw, str):
            if not raw.strip():
                return None
            return _number(raw.strip(), option.type)
        if option.type == "strs":
            parts = str(raw).splitlines()
            if option.separator:
                parts = [p for line in parts for p in line.split(option.separator)]
            return [p.strip() for p in parts if p.strip()]
        if option.type == "int":
            return int(raw)
        if option.type == "float":
            return float(raw)
        return raw


def _number(text: str, kind: str):
    """Typed text as a number; text that is none stays text, for the option check to name."""
    try:
        return int(text) if kind == "int" else float(text)
    except ValueError:
        return text


def _label(tab, name: str) -> str:
    return tab.labels.get(name) or name.replace("_", " ").capitalize()


def option_control(gr, tab, option, default_model: str, element_id: str) -> Control:
    """The control for one declared option, starting at the default model's value."""
    value = get_spec(default_model).options.get(option.name, option.default)
    common = {"label": _label(tab, option.name), "info": option.help, "elem_id": element_id}
    if option.choices is not None and option.type == "str":
        component = gr.Radio(choices=list(option.choices), value=value, **common)
    elif option.type == "bool":
        component = gr.Checkbox(value=bool(value), **common)
    elif option.type == "strs":
        component = gr.Textbox(value="\n".join(value or ()), lines=3, **common)
    elif option.type in ("float", "int") and value is not None and None not in (option.min, option.max):
        step = 1 if option.type == "int" else 0.01
        component = gr.Slider(minimum=option.min, maximum=option.max, value=value, step=step, **common)
    elif option.type in ("float", "int") and value is not None:
        component = gr.Number(value=value, minimum=option.min, maximum=option.max,
                              precision=0 if option.type == "int" else None, **common)
    elif option.type in ("float", "int"):  # "the model decides": a blank box, not a made-up number
        component = gr.Textbox(value="", placeholder="the model's default", **common)
    else:
        component = gr.Textbox(value="" if value is None else str(value), **common)
    return Control("option", option.name, component, option)


def tab_controls(gr, tab, package, start_model: str) -> list[Control]:
    """Every control of ``tab``: model choice first, then the options, then the opacity."""
    backend = prefix = tab.backend
    controls = []
    select = selectors(backend)
    start = get_spec(start_model)
    for key, info in select.items():
        component = gr.Radio(choices=info["choices"], value=start.select.get(key, info["default"]),
                             label=key.capitalize(), info=info["help"], elem_id=f"{prefix}-{key}")
        controls.append(Control("select", key, component))
    models = list_models(backend)
    if not select and len(models) > 1:
        component = gr.Dropdown(choices=models, value=start_model, label="Model", elem_id=f"{prefix}-model")
        controls.append(Control("model", "model", component))
    for option in package.OPTIONS:
        shown = option.cli or option.name in tab.show
        if shown and option.name not in tab.hide and option.type != "any":
            controls.append(option_control(gr, tab, option, start_model, f"{prefix}-{option.name}"))
    if tab.opacity:
        component = gr.Slider(minimum=0, maximum=1, value=0.5, step=0.05, label="Overlay opacity",
                              elem_id=f"{prefix}-alpha")
        controls.append(Control("alpha", "alpha", component))
    return controls


def model_for(backend: str, controls: list[Control], values: list, fallback: str) -> str:
    """The model the page's selector radios (or model menu) name."""
    chosen = {c.name: v for c, v in zip(controls, values) if c.kind == "select"}
    menu = [v for c, v in zip(controls, values) if c.kind == "model" and v]
    if menu:
        return menu[0]
    if not chosen:
        return fallback
    for name in list_models(backend):
        if get_spec(name).select == chosen:
            return name
    wanted = ", ".join(f"{k} {v}" for k, v in chosen.items())
    from ..errors import RequestError

    raise RequestError(f"no {backend} model has {wanted}; see 'segkit models'")
