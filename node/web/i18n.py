"""The web view's own words in English, German and Japanese.

The sentences about parts come from the audit store in every language already; this is
only the page furniture (titles, buttons, labels). A viewer's language is ``?lang=``,
then the ``lineside_lang`` cookie, then the browser's ``Accept-Language``, then
``web.language``.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("en", "de", "ja")
LANG_COOKIE = "lineside_lang"

_WORDS: dict[str, tuple[str, str, str]] = {
    "live": ("Live", "Live", "ライブ"),
    "review": ("Review", "Prüfen", "レビュー"),
    "trends": ("Trends", "Trends", "傾向"),
    "model": ("Model & recipe", "Modell & Rezept", "モデルとレシピ"),
    "login": ("Log in", "Anmelden", "ログイン"),
    "logout": ("Log out", "Abmelden", "ログアウト"),
    "user": ("Name", "Name", "ユーザー名"),
    "password": ("Password", "Passwort", "パスワード"),
    "anonymous": ("looking only", "nur ansehen", "閲覧のみ"),
    "node_state": ("Node", "Knoten", "ノード"),
    "unreachable": ("node not reachable", "Knoten nicht erreichbar", "ノードに接続できません"),
    "parts_per_s": ("parts/s", "Teile/s", "個/秒"),
    "inspected": ("inspected", "geprüft", "検査数"),
    "rejected": ("rejected", "ausgeschleust", "排出数"),
    "reject_pct": ("reject %", "Ausschuss %", "排出率 %"),
    "fail_safe": ("fail-safe", "Sicherheitsausschleusung", "安全排出"),
    "budget": ("budget used p99", "Budget genutzt p99", "予算使用 p99"),
    "latency": ("latency p99", "Latenz p99", "遅延 p99"),
    "pass": ("pass", "i. O.", "合格"),
    "reject": ("reject", "n. i. O.", "排出"),
    "rule": ("rule", "Regel", "ルール"),
    "part": ("part", "Teil", "部品"),
    "no_image": ("image not kept", "Bild nicht gespeichert", "画像なし"),
    "rejects_only": ("rejects only", "nur Ausschuss", "排出のみ"),
    "confirm": ("Confirm", "Bestätigen", "確認"),
    "override": ("Override", "Korrigieren", "訂正"),
    "reason": ("reason", "Begründung", "理由"),
    "awaiting": ("awaiting review", "warten auf Prüfung", "レビュー待ち"),
    "reviewed_by": ("reviewed by", "geprüft von", "レビュー者"),
    "nothing_to_review": ("Nothing to review.", "Nichts zu prüfen.", "レビュー対象なし。"),
    "shortcuts": (
        "keys: c confirm · o override · j/k next/previous",
        "Tasten: c bestätigen · o korrigieren · j/k nächstes/voriges",
        "キー: c 確認 · o 訂正 · j/k 次/前",
    ),
    "findings": ("findings", "Befunde", "所見"),
    "zone": ("zone", "Bereich", "ゾーン"),
    "length": ("length", "Länge", "長さ"),
    "width": ("width", "Breite", "幅"),
    "timings": ("timings", "Zeiten", "時間"),
    "plc": ("PLC handshake", "SPS-Quittung", "PLC応答"),
    "history": ("review history", "Prüfverlauf", "レビュー履歴"),
    "none": ("none", "keine", "なし"),
    "export_csv": ("Export CSV", "CSV exportieren", "CSVエクスポート"),
    "hours": ("hours", "Stunden", "時間"),
    "active_package": ("active package", "aktives Paket", "使用中パッケージ"),
    "shadow": ("shadow candidate", "Schattenkandidat", "シャドー候補"),
    "metrics": ("metrics", "Kennzahlen", "指標"),
    "training": ("training data", "Trainingsdaten", "学習データ"),
    "rules": ("rules", "Regeln", "ルール"),
    "zones": ("zones", "Bereiche", "ゾーン"),
    "repeating": ("repeating defects", "wiederkehrende Fehler", "繰り返し欠陥"),
    "refused": ("refused", "abgelehnt", "拒否"),
    "saved": ("review stored", "Prüfung gespeichert", "レビュー保存済み"),
    "login_needed": (
        "log in to review",
        "zum Prüfen anmelden",
        "レビューにはログインが必要",
    ),
    "defect_type": ("defect type", "Fehlerart", "欠陥種別"),
    "comment": ("comment", "Kommentar", "コメント"),
    "verdict": ("verdict", "Urteil", "判定"),
    "model_version": ("model", "Modell", "モデル"),
    "recipe": ("recipe", "Rezept", "レシピ"),
    "disagreements": ("disagreements", "Abweichungen", "不一致"),
    "cmd_halt": ("Halt", "Anhalten", "停止 (Halt)"),
    "cmd_reset": ("Reset", "Zurücksetzen", "リセット"),
    "cmd_automatic": ("Automatic mode", "Automatikbetrieb", "自動モード"),
    "cmd_start": ("Start inspecting", "Prüfen starten", "検査開始"),
    "cmd_stop": ("Stop inspecting", "Prüfen beenden", "検査終了"),
    "done": ("done", "erledigt", "完了"),
}


def words(lang: str) -> Mapping[str, str]:
    """Every label in ``lang`` (English for an unknown language)."""
    i = LANGUAGES.index(lang) if lang in LANGUAGES else 0
    return {key: texts[i] for key, texts in _WORDS.items()}


def pick(query: str | None, cookie: str | None, accept: str | None, default: str) -> str:
    """The viewer's language (see the module docstring)."""
    for candidate in (query, cookie):
        if candidate in LANGUAGES:
            return candidate
    for part in (accept or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return default if default in LANGUAGES else "en"
