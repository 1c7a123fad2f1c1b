"""What the offline model understands of a product idea: a short name, who it is for, its features.

Plain phrase extraction, no model: the idea is split on punctuation and linking words ("with",
"and", "for", "where", ...); each piece becomes a feature (a noun phrase such as "due dates", or a
verb phrase such as "rate dishes"), a person ("cooks") or nothing (articles, "app", "site").
A small lexicon turns product words into the things they manage ("todo" -> tasks).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_FEATURES = 8

_STOP = frozenset(
    (
        "a an the their its our my your his her them they it this that these those some any all every each "
        "also can could may might will would should must shall let lets allow allows help helps easily quickly "
        "simply just really very be is are was were been being has have had do does did get gets one two "
        "i we you he she me us people user users someone anyone everyone things thing stuff way ways "
        "want wants need needs like"
    ).split()
)
# Words that name the kind of product rather than what it is about.
_GENERIC = frozenset(
    (
        "app apps application applications site website websites webapp web platform tool tools service services "
        "system software product solution program saas mobile online simple small tiny basic new modern "
        "list lists manager management tracker portal"
    ).split()
)
# Kept in a feature's name, dropped from its entity: "plan weekly meals" manages meals.
_ADJECTIVES = frozenset(
    (
        "weekly daily monthly yearly new own favorite favourite personal multiple various different other recent "
        "upcoming public private shared custom simple quick easy"
    ).split()
)
_VERBS = frozenset(
    (
        "add assign archive book browse buy chat collect comment compare complete create delete discover download "
        "edit export filter find follow host import invite join learn like log manage message monitor notify order "
        "organize organise pay plan post publish rate read receive record remind rent report reserve review save "
        "schedule search see sell send share sort split store submit subscribe swap sync tag teach track trade "
        "upload view vote watch write"
    ).split()
)
_GROUPS = frozenset(
    "team family group company organization organisation club household class office school department community "
    "crew".split()
)
_PEOPLE = frozenset(
    (
        "cook chef parent child kid student teacher developer designer manager admin customer client patient doctor "
        "nurse friend member freelancer owner host guest traveler traveller player coach runner reader writer "
        "author artist musician volunteer employee worker shopper buyer seller landlord tenant user"
    ).split()
)
# What a product word manages.
_LEXICON = {
    "todo": "task",
    "to-do": "task",
    "todos": "task",
    "checklist": "item",
    "blog": "post",
    "shop": "product",
    "crm": "contact",
    "chat": "message",
    "calendar": "event",
    "wiki": "page",
    "forum": "thread",
    "budget": "expense",
    "gallery": "photo",
    "library": "book",
    "shopping": "item",
    "grocery": "item",
}
_IRREGULAR = {
    "person": "people",
    "child": "children",
    "man": "men",
    "woman": "women",
    "mouse": "mice",
    # Plurals in -us whose singular ends in -u (not "status", "bonus"): "meal menus", not "menuses".
    "menu": "menus",
    "guru": "gurus",
    "emu": "emus",
    "haiku": "haikus",
}
_UNCOUNTABLE = frozenset("chess news data information equipment feedback inventory software money music".split())
_LINK = r"and|or|with|for|where|that|which|who|whose|so|to|while|including|plus|by|via|using|in|on|of|from|at|&"
_SPLIT = re.compile(rf"\s*([:;,.!?()\n]|—| - |\b(?:{_LINK})\b)\s*", re.IGNORECASE)
_TOKEN = re.compile(r"[a-z][a-z0-9'-]*")
_NAME_END = re.compile(r"[:;.!?\n—]| - |\b(?:where|that|which|who|so that|to help|with)\b", re.IGNORECASE)
_LEAD = re.compile(r"^(?:(?:i|we) (?:want|need|would like)(?: to build)?|build|create|make|develop|write)\s+", re.I)


def singular(word: str) -> str:
    for one, many in _IRREGULAR.items():
        if word == many:
            return one
    if word in _UNCOUNTABLE or word.endswith(("ss", "us", "is")) or len(word) <= 3:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("ches", "shes", "xes", "zes", "sses")):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


def plural(word: str) -> str:
    head, _, last = word.rpartition(" ")
    if last in _IRREGULAR:
        many = _IRREGULAR[last]
    elif last in _UNCOUNTABLE or not last:
        many = last
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        many = last[:-1] + "ies"
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        many = last + "es"
    else:
        many = last + "s"
    return f"{head} {many}".strip()


def slug(text: str) -> str:
    cleaned = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if cleaned and cleaned[0].isdigit():
        cleaned = "n_" + cleaned
    return cleaned[:40].strip("_") or "item"


def class_name(text: str) -> str:
    return "".join(part.capitalize() for part in slug(text).split("_")) or "Item"


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _gerunds() -> dict[str, str]:
    forms: dict[str, str] = {}
    for verb in _VERBS:
        forms[(verb[:-1] if verb.endswith("e") else verb) + "ing"] = verb
        forms[verb + verb[-1] + "ing"] = verb  # plan -> planning, shop -> shopping
    return forms


_GERUNDS = _gerunds()


def _verb(token: str) -> str | None:
    if token in _VERBS:
        return token
    if token in _GERUNDS:
        return _GERUNDS[token]
    for ending in ("es", "s"):
        if token.endswith(ending) and token[: -len(ending)] in _VERBS:
            return token[: -len(ending)]
    return None


@dataclass
class FeatureIdea:
    """One feature: how it is called, the thing it manages, what people do with it."""

    name: str
    entity: str
    verbs: list[str] = field(default_factory=list)
    parent: str | None = None  # "tasks with due dates": every task has a due date

    @property
    def things(self) -> str:
        return plural(self.entity)

    @property
    def module(self) -> str:
        """The component and module that implement it: named after the feature."""
        return slug(self.name)


@dataclass
class Product:
    name: str
    idea: str
    actors: list[str]
    features: list[FeatureIdea]

    @property
    def audience(self) -> str:
        return " and ".join(plural(_actor_label(actor)) for actor in self.actors[:2]) or "its users"


def _actor_label(actor: str) -> str:
    return f"{actor} member" if actor in _GROUPS else actor


def persona_names(product: Product) -> list[str]:
    return [sentence(_actor_label(actor)) for actor in product.actors[:3]]


def _entity(words: list[str]) -> str:
    kept = [word for word in words if word not in _ADJECTIVES] or words
    return " ".join([*kept[-2:-1], singular(kept[-1])]) if kept else ""


def _people_like(word: str) -> bool:
    one = singular(word)
    return one in _PEOPLE or one in _GROUPS or one.endswith(("er", "or", "ist", "ent", "ant", "ian"))


def _phrase(text: str, *, head: bool = False) -> tuple[list[str], FeatureIdea | None]:
    """The people and the feature one piece of an idea names (either may be missing)."""
    tokens = [token.strip("'-") for token in _TOKEN.findall(text.lower())]
    tokens = [token for token in tokens if token and token not in _STOP]
    if head:
        known = [_LEXICON[token] for token in tokens if token in _LEXICON]
        if known:
            return [], FeatureIdea(sentence(plural(known[0])), known[0])
        verbs = [_GERUNDS[token] for token in tokens if token in _GERUNDS]
        nouns = [token for token in tokens if token not in _GENERIC and token not in _GERUNDS]
        entity = _entity(nouns)
        return [], FeatureIdea(sentence(plural(entity)), entity, verbs) if entity else None
    for index, token in enumerate(tokens):
        verb = _verb(token)
        if verb is None or index == len(tokens) - 1:
            continue
        actors = [singular(tokens[index - 1])] if index else []
        objects = tokens[index + 1 :]
        entity = _entity(objects)
        name = sentence(" ".join([verb, *objects]))
        return actors, FeatureIdea(name, entity, [verb]) if entity else None
    if all(token in _GENERIC for token in tokens):
        return [], None  # "on mobile", "a web app"
    return [], FeatureIdea(sentence(" ".join(tokens)), _entity(tokens))


def product_name(idea: str) -> str:
    first = _NAME_END.split(idea.strip(), maxsplit=1)[0].strip(" ,")
    first = _LEAD.sub("", first)
    first = re.sub(r"^(?:an?|the)\s+", "", first, flags=re.IGNORECASE)
    words = first.split()[:6]
    return sentence(" ".join(words))[:80].strip() or "The product"


def feature_from_name(name: str) -> FeatureIdea:
    """The feature a given name (from a PRD written by anyone) stands for."""
    _, found = _phrase(name)
    if found is None or not found.entity:
        return FeatureIdea(name, singular(slug(name).split("_")[-1]) if slug(name) != "item" else "item")
    found.name = name
    return found


def analyse(idea: str) -> Product:
    """The product an idea describes; every idea, even an empty one, gives at least one feature."""
    text = re.sub(r"\s+", " ", idea).strip()
    name = product_name(text)
    body = re.sub(r"^(?:an?|the)\s+", "", _LEAD.sub("", text), flags=re.IGNORECASE)
    pieces = _SPLIT.split(body)
    actors: list[str] = []
    features: list[FeatureIdea] = []
    parent: str | None = None
    last: str | None = None  # the entity of the previous piece: what "with" attaches to
    separator = ""
    for index in range(0, len(pieces), 2):
        piece = pieces[index].strip()
        kind = separator.lower()
        separator = pieces[index + 1] if index + 1 < len(pieces) else ""
        if not piece:
            continue
        head = index == 0
        people, found = _phrase(piece, head=head)
        if kind in ("for", "to") and found is not None and not found.verbs and _people_like(found.entity.split()[-1]):
            people = [found.entity]
            found = FeatureIdea(found.name, found.entity) if found.entity in _GROUPS else None
        for person in people:
            if person not in actors and _people_like(person):
                actors.append(person)
        if kind == "with" and last is not None:
            parent = last
        elif kind not in (",", "and", "or", "&"):
            parent = None
        if found is None:
            continue
        last = found.entity if kind != "with" or parent is None else last
        known = next((feature for feature in features if feature.entity == found.entity), None)
        if known is not None:
            known.verbs.extend(verb for verb in found.verbs if verb not in known.verbs)
            continue
        found.parent = parent if parent != found.entity else None
        features.append(found)
    if not features:
        fallback = [word for word in _TOKEN.findall(name.lower()) if word not in _STOP and word not in _GENERIC]
        entity = _entity(fallback) if fallback else "item"
        features.append(FeatureIdea(sentence(plural(entity)), entity))
    return Product(name=name, idea=text, actors=actors, features=features[:MAX_FEATURES])
