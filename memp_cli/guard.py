"""The injection guard: text that reads like an instruction to the model reading a memory, rather than the task.

The rules cover orders to drop earlier instructions (in English paraphrases and in Spanish, French, German,
Portuguese, Russian, Chinese and Japanese), role changes, prompt leaks, hiding things from the user, notes to the
next agent, chat-template markup, and exfiltration commands (a download piped to a shell, base64 decoded into a
shell, environment or key files sent over the network, reverse shells). A flagged memory is stored but held out of
recall until a person approves it.

Every rule is written in lower case and runs on the text lower-cased, only when the text holds one of its hints
(substrings every match contains); each is linear: it starts at a literal word and its gaps are bounded.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from functools import cache

from .secrets import lowered

# A few words, bounded: the gap a paraphrase puts between an order's verb and its object.
_W = r"(?:[^\s.;:!?]+\s+){0,4}?"
_GAP = r"[^.\n]{0,40}?"  # the same for languages written with spaces, counted in characters
_CJK_GAP = r"[^。！？\n]{0,20}?"
_QUALIFIER = r"(?:previous|prior|above|earlier|preceding|system|original|all|your|any|other|these|those|safety|initial)"
_ORDERS = (
    r"(?:instructions?|prompts?|rules|guidelines|directives?|directions|guardrails|constraints|restrictions|filters|"
    r"messages|orders|programming|policies|guidance)"
)
_SHELL = r"\|\s*(?:sudo\s+(?:-\S+\s+)*)?(?:(?:ba|z|k|da|fi)?sh|python[0-9.]*|perl|ruby|node|iex|pwsh|powershell)\b"

# (name, pattern, hints)
RULES: list[tuple[str, str, tuple[str, ...]]] = [
    (
        "ignore-instructions",
        r"\b(?:ignore|disregard|forget|override|bypass|discard|set\s+aside|stop\s+(?:following|obeying)|"
        r"no\s+longer\s+(?:follow|obey)|(?:do\s+not|don't)\s+(?:follow|obey))\s+" + _W + _QUALIFIER + r"\s+" + _W + _ORDERS
        + r"\b",
        ("ignor", "disregard", "forget", "overrid", "bypass", "discard", "aside", "follow", "obey"),
    ),
    (
        "ignore-instructions",
        r"\b(?:ignore|disregard|forget)\s+(?:everything|anything|all)\s+(?:you\s+(?:were|have\s+been)\s+told|above|"
        r"before|said|prior)|\b(?:ignore|disregard|forget|override|discard|set\s+aside|stop\s+following)\s+" + _W
        + _ORDERS + r"\s+" + _W + r"(?:earlier|before|above|previously|so\s+far|until\s+now)\b",
        ("ignor", "disregard", "forget", "overrid", "discard", "aside", "follow"),
    ),
    (
        "ignore-instructions",
        (r"\b(?:(?:instructions|rules|prompt|directions|guidance|orders)\s+(?:above|before|so\s+far|given\s+earlier)|"
        r"(?:prior|previous|earlier|above|original)\s+(?:instructions|rules|prompts?|directions|guidance|orders))\s+"
        r"(?:are|is)\s+(?:now\s+)?(?:outdated|obsolete|void|invalid|cancel+ed|revoked|fake|no\s+longer)"),
        ("instructions", "rules", "prompt", "directions", "guidance", "orders"),
    ),
    (
        "new-instructions",
        (r"\b(?:your\s+(?:new|real|actual|true)\s+(?:task|instructions?|goal|objective|mission|role)\s+(?:is|are)\b|"
        r"(?:new|updated|real)\s+(?:system\s+)?instructions?\s*:|system\s+override\b|new\s+system\s+prompt)"),
        ("new", "real", "actual", "true", "updated", "instruction", "overrid", "prompt"),
    ),
    (
        "role-change",
        (r"\byou\s+are\s+now\s+(?:a|an|the|my|no\s+longer|dan|free|unrestricted|jailbroken|in\s+(?:developer|dev|god|"
        r"jailbreak|unrestricted|admin|debug|dan)\s+mode)\b|\bfrom\s+(?:now|here)\s+on,?\s+you\s+(?:are|will\s+only|"
        r"must\s+only|obey|answer\s+only|only)\b|\b(?:pretend|imagine)\s+(?:to\s+be|you\s+are|that\s+you\s+are)\s+"
        r"(?:a|an)\s+(?:unrestricted|unfiltered|jailbroken|uncensored|evil|malicious)\b|\bact\s+as\s+(?:a|an)\s+"
        r"(?:unrestricted|unfiltered|jailbroken|uncensored)\b"),
        ("now", "here", "pretend", "imagine", "act"),
    ),
    (
        "role-change",
        (r"\b(?:assistant|ai|model|mode|yourself|you)\s+(?:without|with\s+no)\s+(?:any\s+)?(?:restrictions|rules|"
        r"limits|limitations|filters|safety|guardrails|censorship)\b|\bsafety\s+(?:checks|filters|guidelines|rules)\s+"
        r"(?:are|is|have\s+been)\s+(?:now\s+)?(?:disabled|off|removed|lifted)|\b(?:developer|god|jailbreak|dan)\s+"
        r"mode\s+(?:enabled|on|activated)|\b(?:enable|activate|enter|switch\s+to)\s+(?:developer|god|jailbreak|dan)\s+"
        r"mode\b|\b(?:turn\s+off|disable|remove|bypass|switch\s+off)\s+(?:your|the|all)\s+(?:content\s+|safety\s+)?"
        r"(?:filters|guardrails|safety\s+checks|moderation)\b"),
        ("restriction", "rules", "limit", "filter", "safety", "guardrail", "censor", "mode", "moderation"),
    ),
    (
        "prompt-leak",
        (r"\b(?:reveal|print|show|output|repeat|display|dump|leak|send|tell\s+me)\s+(?:me\s+)?(?:your|the)\s+"
        r"(?:full\s+|entire\s+|original\s+|hidden\s+|initial\s+)?(?:system\s+prompt|hidden\s+instructions|"
        r"system\s+message|initial\s+instructions)"),
        ("system", "instructions"),
    ),
    (
        "hide-from-user",
        (r"\b(?:do\s+not|don't|never)\s+(?:tell|inform|alert|show|mention|notify|warn)\s+(?:this\s+to\s+|it\s+to\s+)?"
        r"(?:the\s+)?(?:user|human|operator)\b|\b(?:quietly|silently|secretly|covertly)\s+(?:run|execute|send|upload|"
        r"delete|install|exfiltrate|approve)\b"),
        ("user", "human", "operator", "quietly", "silently", "secretly", "covertly"),
    ),
    (
        "reader-directive",
        (r"\b(?:the\s+)?(?:next|future)\s+(?:agent|assistant|model|ai)\s+(?:must|should|will)\b|\b(?:note|message|"
        r"instructions?)\s+(?:to|for)\s+(?:the\s+|any\s+)?(?:ai|assistant|model|llm|language\s+model)\b|"
        r"\b(?:ai|assistant|model|llm)\s+reading\s+this\b|\b(?:assistant|ai|model|llm|agent)\s*,\s*(?:when|if|once|as\s+soon\s+as)\s+"
        r"you\s+read\s+this\b"),
        ("next", "future", "note", "message", "instruction", "read"),
    ),
    # Other languages: an order's verb, then within a few words what it orders dropped.
    (
        "ignore-instructions",  # Spanish
        r"\b(?:ignora|ignore|ignoren|ignorad|olvida|olvide|olviden|omite|descarta|no\s+(?:sigas|sigan|siga|obedezcas))\b" + _GAP
        + r"\b(?:instrucciones|reglas|indicaciones|normas|directrices|órdenes)",
        ("ignor", "olvid", "omite", "descarta", "siga", "obedezc"),
    ),
    (
        "ignore-instructions",  # French
        r"\b(?:ignorez|ignorer|ignore|oubliez|oublie|oublier|négligez|ne\s+tenez\s+(?:plus|pas)\s+compte\s+d\w*|"
        r"ne\s+suivez\s+(?:plus|pas))\b" + _GAP
        + r"\b(?:instructions\s+(?:précédentes|antérieures|ci-dessus|initiales)|consignes|règles|directives)",
        ("ignor", "oubli", "néglig", "tenez", "suivez"),
    ),
    (
        "ignore-instructions",  # German
        r"\b(?:ignoriere|ignorieren|ignorier|vergiss|vergesst|vergessen\s+sie|missachte|befolge\s+nicht|befolgen\s+sie\s+nicht)\b" + _GAP
        + r"(?:anweisungen|regeln|vorgaben|instruktionen|richtlinien|befehle|systemprompt)",
        ("ignorier", "vergiss", "vergesst", "vergessen", "missachte", "befolge"),
    ),
    (
        "ignore-instructions",  # Portuguese
        r"\b(?:ignore|ignora|ignorem|esqueça|esqueca|esqueçam|desconsidere|descarte|n[ãa]o\s+(?:siga|sigam|obedeça|obedeca))\b" + _GAP
        + r"\b(?:instruções|instrucoes|regras|diretrizes|orientações|ordens)",
        ("ignor", "esque", "desconsider", "descart", "siga", "obede"),
    ),
    (
        "ignore-instructions",  # Russian
        r"(?:игнорируй|игнорируйте|игнорировать|забудь|забудьте|не\s+обращай\s+внимания\s+на)" + _GAP
        + r"(?:инструкци|правил|указани|промпт|запрет|ограничени)",
        ("игнорир", "забуд", "обращай"),
    ),
    (
        "ignore-instructions",  # Chinese
        r"(?:忽略|无视|忽视|忘记|忘掉|不要理会|不要遵守)" + _CJK_GAP + r"(?:指令|指示|规则|提示词|设定|要求|限制)",
        ("忽略", "无视", "忽视", "忘记", "忘掉", "不要理会", "不要遵守"),
    ),
    (
        "ignore-instructions",  # Japanese
        r"(?:指示|命令|ルール|指令|プロンプト|制約)を" + _CJK_GAP + r"(?:無視|忘れ)",
        ("無視", "忘れ"),
    ),
    (
        "role-change",  # the same orders' companions in other languages: no limits, the system prompt, you are now
        (r"\bsans\s+(?:limites|restrictions|règles|filtres)\b|\b(?:sin|sem)\s+(?:límites|restricciones|reglas|limites|"
        r"restrições|regras)\b|\bohne\s+(?:einschränkungen|regeln|grenzen|filter)\b|\bбез\s+(?:ограничений|правил)|"
        r"没有(?:任何)?(?:限制|规则)|現在你是|你现在是|制限のない|(?:prompt|invite)\s+(?:système|systeme)|"
        r"systemprompt|системн\w*\s+промпт|系统提示|システムプロンプト|prompt\s+del\s+sistema|prompt\s+do\s+sistema"),
        ("sans", "límites", "limites", "restricciones", "reglas", "restrições", "regras", "ohne", "без", "没有", "你是",
         "制限", "système", "systeme", "systemprompt", "системн", "系统提示", "システム", "sistema"),
    ),
    (
        "exfiltrate",  # natural-language orders to send secrets somewhere, in each language
        r"\b(?:exfiltrate|leak|send|upload|post|forward|email|e-mail)\s+(?:the\s+|all\s+|your\s+|any\s+|my\s+)*"
        r"(?:secrets?|credentials|api\s+keys?|keys|tokens?|passwords?|env(?:ironment)?\s+variables|ssh\s+keys?|"
        r"private\s+keys?)\s+to\b|\b(?:envía|envia|enviar|manda|sube)\b" + _GAP
        + r"(?:~/\.ssh|contraseñas|claves|credenciales|tokens)|\b(?:sende|schicke|senden|übermittle)\b" + _GAP
        + r"(?:zugangsdaten|passwörter|schlüssel|tokens)|(?:отправь|отправьте|пришли|перешли)" + _GAP
        + r"(?:парол|ключ|токен|учётн|учетн)|\b(?:envie|enviar|mande)\b" + _GAP
        + r"(?:chaves|senhas|credenciais|tokens)|\b(?:envoyez|envoie|envoyer)\b" + _GAP
        + r"(?:mots\s+de\s+passe|clés|identifiants|jetons)|(?:发给|发送|上传)" + _CJK_GAP
        + r"(?:密码|密钥|令牌|凭证)|(?:密码|密钥|令牌|凭证)" + _CJK_GAP + r"(?:发给|发送|上传)|"
        r"(?:パスワード|鍵|トークン|認証情報)" + _CJK_GAP + r"(?:送信|送って|アップロード)",
        ("exfiltrat", "leak", "send", "upload", "post", "forward", "email", "mail", "envi", "envía", "manda", "sube",
         "schicke", "übermittle", "отправ", "пришли", "перешли", "mande", "envoy", "发", "上传", "送", "アップロード"),
    ),
    # Chat-template markup: the tokens that open a turn or a system message in a model's prompt format.
    (
        "chat-markup",
        (r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id|"
        r"begin_of_text|end_of_text)\|>|\[/?inst\]|<</?sys>>|<(?:start|end)_of_turn>|</s>\s*(?:<s>|\[inst\]|<\|)|"
        r"<s>\s*\[inst\]"),
        ("<|", "[inst]", "[/inst]", "<<sys", "<</sys", "_of_turn>", "</s>", "<s>"),
    ),
    ("chat-markup", r"(?m)^[ \t]*#{2,4}[ \t]*(?:system|instruction|instructions)(?:[ \t]+(?:prompt|message))?[ \t]*:",
     ("##",)),
    # Exfiltration commands.
    (
        "exfiltrate",  # a download piped into a shell or an interpreter
        r"\b(?:curl|wget|iwr|invoke-webrequest|fetch)\b[^\n|;&]{0,200}?" + _SHELL + r"|\b(?:ba|z)?sh\s+(?:-c\s+)?"
        r"[\"']?(?:<\(|\$\()\s*(?:curl|wget)\b",
        ("curl", "wget", "iwr", "invoke", "fetch"),
    ),
    ("exfiltrate", r"\bbase64\s+(?:-d|--decode|-D)\b[^\n;&]{0,40}?" + _SHELL, ("base64",)),
    (
        "exfiltrate",  # the environment, a secret variable or a key file given as a network tool's data
        (r"\b(?:curl|wget|nc|ncat|netcat|socat)\b[^\n]{0,200}?\s(?:-d|--data[a-z-]*|-f|--form|-t|--upload-file|"
        r"--post-data|--post-file|--body-data)[=\s]+[^\n]{0,60}?(?:\$\(\s*(?:env|printenv|set)\s*\)|"
        r"\$\{?[a-z_]*(?:key|token|secret|password)[a-z_]*\}?|@-(?!\S)|@~?/?\S*(?:\.env\b|\.ssh/|id_rsa|id_ed25519|"
        r"credentials|\.netrc|\.pem\b))"),
        ("curl", "wget", "nc", "ncat", "netcat", "socat"),
    ),
    (
        "exfiltrate",  # a key, an env file or a credentials folder read and piped to a network tool
        (r"\b(?:cat|tar|zip|base64|gzip|xxd)\b[^\n|]{0,100}?(?:~/\.ssh|~/\.aws|~/\.gnupg|\.env\b|id_rsa|id_ed25519|"
        r"/etc/shadow|\.netrc|credentials)[^\n|]{0,100}?\|\s*(?:curl|wget|nc|ncat|netcat|socat|telnet)\b"),
        ("cat", "tar", "zip", "base64", "gzip", "xxd"),
    ),
    (
        "exfiltrate",  # a private key, an env file or cloud credentials copied to another host
        (r"\b(?:scp|rsync|sftp)\b[^\n]{0,100}?(?:~/\.aws|~/\.gnupg|id_rsa(?!\.pub)|id_ed25519(?!\.pub)|id_ecdsa(?!\.pub)|"
        r"\.env\b|/etc/shadow)[^\n]{0,100}?\S@[^\s:]+:"),
        ("scp", "rsync", "sftp"),
    ),
    (
        "exfiltrate",  # reverse shells, and the environment posted from a script
        (r"/dev/tcp/|\bnc\b[^\n]{0,40}?\s-e\s+/bin/(?:ba)?sh|os\.environ[^\n]{0,160}?(?:urlopen|requests\.post|"
        r"http\.client)|(?:urlopen|requests\.(?:post|get))[^\n]{0,160}?os\.environ"),
        ("/dev/tcp/", "nc", "environ"),
    ),
]


@dataclass(frozen=True)
class _Rules:
    """The rules compiled, and their hints indexed: word stems by their first letters, the rest (markup, CJK) as
    substrings."""

    rules: tuple[tuple[str, re.Pattern[str], re.Pattern[str]], ...]
    stems: dict[str, tuple[tuple[str, frozenset[int]], ...]]
    symbols: tuple[tuple[str, frozenset[int]], ...]
    always: frozenset[int]


_WORD = re.compile(r"\w+")
_KEY = 2  # stems are looked up by their first two letters
_SPACES = str.maketrans({c: " " for c in string.punctuation.replace("_", "")})


def _is_stem(hint: str) -> bool:
    # A stem is a word's beginning: found by looking the text's words up. CJK text has no spaces between words.
    return _WORD.fullmatch(hint) is not None and all(ord(c) < 0x2E80 for c in hint)


@cache
def _rules() -> _Rules:
    # Each rule twice: as written, run on the lower-cased text (literal prefixes make that fast), and ignoring
    # case, for the texts whose lower-casing cannot be trusted (see secrets.lowered).
    rules = tuple((n, re.compile(p), re.compile(p, re.IGNORECASE)) for n, p, _ in RULES)
    by_hint: dict[str, set[int]] = {}
    always = set()
    for i, (_, _, hints) in enumerate(RULES):
        if not hints:
            always.add(i)
        for hint in hints:
            by_hint.setdefault(hint, set()).add(i)
    stems: dict[str, list[tuple[str, frozenset[int]]]] = {}
    for hint, ids in by_hint.items():
        if _is_stem(hint):
            stems.setdefault(hint[:_KEY], []).append((hint, frozenset(ids)))
    symbols = tuple((h, frozenset(ids)) for h, ids in by_hint.items() if not _is_stem(h))
    return _Rules(rules, {k: tuple(v) for k, v in stems.items()}, symbols, frozenset(always))


def _candidates(low: str, index: _Rules) -> set[int]:
    """Return the rules whose hints `low` holds: a word beginning with a stem, or a substring."""
    found = set(index.always)
    ascii_only = low.isascii()
    # ASCII text splits into words faster with its punctuation turned to spaces than with a regex (what \w+ finds).
    words = low.translate(_SPACES).split() if ascii_only else _WORD.findall(low)
    for word in set(words):
        for stem, ids in index.stems.get(word[:_KEY], ()):
            if word.startswith(stem):
                found |= ids
    for symbol, ids in index.symbols:
        if (not ascii_only or symbol.isascii()) and symbol in low:
            found |= ids
    return found


def flag(text: str | None) -> str | None:
    """Return why `text` looks like an instruction to its reader (the rule and the words), else None."""
    if not text:
        return None
    index = _rules()
    low = lowered(text)
    for i in sorted(_candidates(low, index)) if low is not None else range(len(index.rules)):
        name, rule, anycase = index.rules[i]
        match = rule.search(low) if low is not None else anycase.search(text)
        if match:
            return f"{name}: {' '.join(match.group(0).split())[:80]!r}"
    return None
