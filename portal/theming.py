"""Themes: every tenant page is rendered through the tenant's theme, falling back to `default`.

A theme is a folder `themes/<name>/` with `theme.toml`, `templates/` and `static/`.
`render("auth/login.html")` asks Jinja for `@<theme>/auth/login.html`; the loader looks in the
theme's folder, then in `default`'s, then among the portal's own templates. Because the theme
is part of the template name, Jinja's cache is keyed by theme and one tenant's page is never
served in another's brand. `{% extends "base.html" %}` inside a themed template stays in the
same theme (see `ThemedEnvironment.join_path`). A theme template that fails to compile falls
back to the default theme's, never a 500.

Names themes may use in templates: `brand` (display_name, theme, primary_color,
accent_color, support_email, logo_url), `theme_static(path)`, `current_user`, `csrf_token()`,
`url_for`, `site`, `get_flashed_messages`.
"""

from __future__ import annotations

import logging
import tomllib
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, abort, current_app, g, render_template, send_from_directory, url_for
from flask.templating import Environment
from jinja2 import BaseLoader, TemplateNotFound, TemplateSyntaxError

from tenants.provisioning import ThemeColors

log = logging.getLogger(__name__)
DEFAULT_THEME = "default"


@dataclass(frozen=True)
class Theme:
    name: str
    label: str
    description: str
    colors: ThemeColors
    path: Path


def load_themes(themes_dir: Path) -> dict[str, Theme]:
    themes = {}
    for toml_file in sorted(themes_dir.glob("*/theme.toml")):
        data = tomllib.loads(toml_file.read_text(encoding="utf-8"))
        colors = data.get("colors", {})
        name = toml_file.parent.name
        themes[name] = Theme(
            name=name,
            label=data.get("name", name),
            description=data.get("description", ""),
            colors=ThemeColors(colors.get("primary", "#334155"), colors.get("accent", "#0ea5e9")),
            path=toml_file.parent,
        )
    if DEFAULT_THEME not in themes:
        raise RuntimeError(f"the '{DEFAULT_THEME}' theme is missing from {themes_dir}")
    return themes


class ThemeLoader(BaseLoader):
    """`@theme/name` -> theme folder, then default theme, then the portal's templates."""

    def __init__(self, themes_dir: Path, fallback: BaseLoader):
        self.themes_dir = themes_dir
        self.fallback = fallback

    def get_source(self, environment, template):
        if not template.startswith("@"):
            return self.fallback.get_source(environment, template)
        theme, _, name = template[1:].partition("/")
        for folder in dict.fromkeys((theme, DEFAULT_THEME)):
            path = self._find(folder, name)
            if path is not None:
                mtime = path.stat().st_mtime
                return path.read_text(encoding="utf-8"), str(path), lambda p=path, m=mtime: _unchanged(p, m)
        return self.fallback.get_source(environment, name)

    def _find(self, theme: str, name: str) -> Path | None:
        base = (self.themes_dir / theme / "templates").resolve()
        path = (base / name).resolve()
        if base not in path.parents or not path.is_file():
            return None
        return path

    def list_templates(self):
        return self.fallback.list_templates()


def _unchanged(path: Path, mtime: float) -> bool:
    try:
        return path.stat().st_mtime == mtime
    except OSError:
        return False


class ThemedEnvironment(Environment):
    def join_path(self, template: str, parent: str) -> str:
        if parent.startswith("@") and not template.startswith("@"):
            return parent.split("/", 1)[0] + "/" + template
        return template


class ThemedFlask(Flask):
    jinja_environment = ThemedEnvironment

    def create_global_jinja_loader(self):
        return ThemeLoader(Path(self.config["THEMES_DIR"]), super().create_global_jinja_loader())


def themes() -> dict[str, Theme]:
    return current_app.extensions["themes"]


def current_theme() -> str:
    brand = getattr(g, "brand", None)
    name = brand.theme if brand is not None else DEFAULT_THEME
    return name if name in themes() else DEFAULT_THEME


def render(name: str, **context) -> str:
    """Render `name` in the current brand's theme, falling back to the default theme."""
    theme = current_theme()
    try:
        return render_template(f"@{theme}/{name}", **context)
    except TemplateSyntaxError:
        if theme == DEFAULT_THEME:
            raise
        log.exception("theme %s: template %s does not compile; using the default theme's", theme, name)
        return render_template(f"@{DEFAULT_THEME}/{name}", **context)


def theme_static(filename: str) -> str:
    return url_for("theme_static", theme=current_theme(), filename=filename)


def logo_url() -> str | None:
    brand = getattr(g, "brand", None)
    if brand is None or not brand.logo_file or getattr(g, "tenant", None) is None:
        return None
    return url_for("brand_logo", name=brand.logo_file)


def init_app(app: Flask) -> None:
    app.extensions["themes"] = load_themes(Path(app.config["THEMES_DIR"]))

    @app.route("/_theme/<theme>/<path:filename>", endpoint="theme_static")
    def _theme_static(theme: str, filename: str):
        if theme not in themes():
            abort(404)
        return send_from_directory(themes()[theme].path / "static", filename, max_age=3600)

    @app.context_processor
    def _theme_globals():
        return {
            "theme_static": theme_static,
            "logo_url": logo_url,
            "site": getattr(g, "site", None),
            "brand": getattr(g, "brand", None),
            "tenant": getattr(g, "tenant", None),
        }


def template_exists(theme: str, name: str) -> bool:
    try:
        current_app.jinja_env.get_template(f"@{theme}/{name}")
    except TemplateNotFound:
        return False
    return True
