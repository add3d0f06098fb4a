"""A seeded generator for the kit's embedded offline tasks, shaped like the paper's.

Three tasks, one of each kind the paper uses, each with train/validation/test splits:

* ``extractive_qa`` (like SQuAD, QED): a profile of one person in which every kind of
  answer has a distractor of its kind (two cities, three years, two jobs, two workplaces,
  two counts, a friend's city and job), a question about one fact; the answer is a span
  copied from the paragraph.
* ``generative_qa`` (like FairytaleQA, PubMedQA): a paragraph about two or three people,
  and the answer has to be *composed*: an age from two years, a sum of two counts, a yes/no with
  its reason. It is not a span of the paragraph.
* ``dialogue_summary`` (like DialogSum): a two-person dialogue about a plan (a meeting,
  an order, a booking) with small talk around it; the answer is a one-sentence summary.

Variety against memorisation: names, surnames, cities, organisations, occupations,
animals, years and counts are drawn independently; sentences come from several templates
each; every paragraph carries distractor facts of the same types, so the question can
only be answered by reading. Every record is generated from its own
``random.Random(f"{seed}:{task}:{index}")`` stream, so a record never depends on Python's
hash seed or on the other records, and splits are cut by index: they never share a
record, and a duplicate text is dropped from the later split.

    python -m uld data --out data/tasks      # rewrites the committed files, byte for byte

>>> record = extractive_record(0, 0)
>>> record["answers"][0] in record["context"]
True
"""

from __future__ import annotations

import json
import random
from pathlib import Path

__all__ = ["EMBEDDED_TASKS", "SPLIT_SIZES", "generate", "write_tasks", "extractive_record", "generative_record",
           "dialogue_record", "every_question", "pretraining_text"]

SEED = 2024
SPLIT_SIZES = {"train": 1500, "validation": 150, "test": 600}

FIRST_NAMES = [
    "Ada", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal", "Lena", "Mateo",
    "Nadia", "Oskar", "Priya", "Quentin", "Rosa", "Samir", "Tove", "Ugo", "Vera", "Wen", "Xavier", "Yara", "Zeno",
    "Amara", "Bjorn", "Carmen", "Davide", "Emeka", "Fiona", "Goran", "Hana", "Ivo", "Julia", "Kofi", "Lucia", "Milan",
    "Noor", "Otto", "Paula", "Rafael", "Sofia", "Tariq", "Ulla", "Viktor", "Wanda", "Yusuf", "Zora",
]
SURNAMES = [
    "Alder", "Brandt", "Costa", "Duval", "Eriksen", "Ferrer", "Galli", "Haddad", "Ito", "Jansen", "Kowalski", "Lindqvist",
    "Moreau", "Novak", "Okafor", "Petrov", "Quiroga", "Rossi", "Sato", "Takacs", "Umarov", "Varga", "Weber", "Xu",
    "Yilmaz", "Zanetti", "Abara", "Berg", "Castillo", "Dimitrov", "Esposito", "Fontaine", "Gruber", "Horvat",
]
CITIES = {  # city -> country
    "Lund": "Sweden", "Porto": "Portugal", "Ghent": "Belgium", "Bergen": "Norway", "Graz": "Austria",
    "Turku": "Finland", "Split": "Croatia", "Brno": "Czechia", "Tartu": "Estonia", "Cork": "Ireland",
    "Leiden": "the Netherlands", "Lyon": "France", "Bologna": "Italy", "Valencia": "Spain", "Krakow": "Poland",
    "Aarhus": "Denmark", "Basel": "Switzerland", "Kaunas": "Lithuania", "Plovdiv": "Bulgaria", "Cluj": "Romania",
    "Izmir": "Turkey", "Fes": "Morocco", "Kyoto": "Japan", "Busan": "South Korea", "Pune": "India",
    "Recife": "Brazil", "Rosario": "Argentina", "Halifax": "Canada", "Dunedin": "New Zealand", "Hobart": "Australia",
}
ORGANISATIONS = [
    "the Harbour Library", "the Northgate Bakery", "the Blue Heron Clinic", "the Alder Street School",
    "the Riverside Observatory", "the Old Mill Theatre", "the Copper Kettle Cafe", "the Lantern Bookshop",
    "the Meridian Bike Works", "the Green Valley Farm", "the Stonebridge Museum", "the Seaside Radio Station",
    "the Juniper Print Shop", "the Hilltop Orchestra", "the Sparrow Design Studio", "the Silver Lake Ferry Company",
]
OCCUPATIONS = ["baker", "librarian", "nurse", "teacher", "astronomer", "carpenter", "pharmacist", "architect",
               "translator", "gardener", "engineer", "photographer", "violinist", "chemist", "journalist", "pilot"]
ANIMALS = ["cats", "dogs", "goats", "parrots", "rabbits", "horses", "chickens", "tortoises", "ducks", "sheep"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
PLACES = ["the station", "the market square", "the museum entrance", "the library", "the harbour", "the park gate",
          "the town hall", "the cafe on the corner", "the bus stop", "the bakery"]
ITEMS = {"notebooks": 3, "lamps": 25, "chairs": 40, "umbrellas": 12, "kettles": 18, "backpacks": 30, "mugs": 6,
         "plants": 9, "tickets": 15, "books": 11}
FILLERS = ["The winter that year was unusually mild.", "Most of the town's streets are lined with lime trees.",
           "A new bridge over the river opened in the spring.", "The local newspaper is printed every Thursday.",
           "Tourists often visit the old harbour in the summer.", "The town holds a music festival each August."]
TIMES = ["8 am", "9 am", "10 am", "11 am", "noon", "1 pm", "2 pm", "3 pm", "4 pm", "5 pm", "6 pm", "7 pm"]


def _person(rng: random.Random, taken: set) -> dict:
    while True:
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(SURNAMES)}"
        if name not in taken and name.split()[0] not in {n.split()[0] for n in taken}:
            taken.add(name)
            break
    city = rng.choice(list(CITIES))
    return dict(name=name, first=name.split()[0], city=city, country=CITIES[city], born=rng.randint(1940, 2004),
                job=rng.choice(OCCUPATIONS), org=rng.choice(ORGANISATIONS), pets=rng.randint(2, 9),
                animal=rng.choice(ANIMALS), joined=None)


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _fact_sentences(rng: random.Random, p: dict) -> dict[str, str]:
    """One sentence for each kind of fact about a person (``born``, ``work``, ``pets``,
    ``joined``), each from one of several templates; the ``born`` one names the person in
    full. Every sentence opens with the person's name and states the fact after it, so a
    left-to-right reader (a causal LM) has met the subject before the value it must bind to it."""
    return {
        "born": rng.choice([
            f"{p['name']} was born in {p['city']} in {p['born']}.",
            f"{p['name']} was born in {p['born']} and grew up in {p['city']}.",
            f"{p['name']} comes from {p['city']}, where {p['first']} was born in {p['born']}.",
        ]),
        "work": rng.choice([
            f"{p['first']} works as {_a(p['job'])} at {p['org']}.",
            f"{p['first']} is {_a(p['job'])} at {p['org']} today.",
            f"{p['first']} has a job as {_a(p['job'])} at {p['org']}.",
        ]),
        "pets": rng.choice([
            f"{p['first']} keeps {p['pets']} {p['animal']} at home.",
            f"{p['first']} looks after {p['pets']} {p['animal']} at home.",
            f"{p['first']} owns {p['pets']} {p['animal']}.",
        ]),
        "joined": rng.choice([
            f"{p['first']} joined {p['org']} in {p['joined']}.",
            f"{p['first']} started at {p['org']} in {p['joined']}.",
        ]),
    }


def _facts(rng: random.Random, p: dict) -> list[str]:
    """A person's four fact sentences: the one naming them in full first, the others shuffled."""
    sentences = _fact_sentences(rng, p)
    rest = [sentences["work"], sentences["pets"], sentences["joined"]]
    rng.shuffle(rest)
    return [sentences["born"]] + rest


def _paragraph(rng: random.Random, people: list[dict]) -> str:
    """The people's facts, person by person, with two filler sentences dropped in between."""
    blocks = []
    for person in people:
        person["joined"] = person["born"] + rng.randint(18, 30)
        blocks.append(_facts(rng, person))
    for filler in rng.sample(FILLERS, k=2):
        blocks.insert(rng.randint(0, len(blocks)), [filler])
    return " ".join(sentence for block in blocks for sentence in block)


def _record_rng(task: str, index: int, seed: int) -> random.Random:
    return random.Random(f"{seed}:{task}:{index}")


def extractive_record(index: int, seed: int = SEED) -> dict:
    """One extractive QA record: the answer is a span of the context, among distractors of its type."""
    context, questions = _profile(_record_rng("extractive_qa", index, seed))
    question, answer = questions[_record_rng("extractive_qa:question", index, seed).randrange(len(questions))]
    return dict(id=f"extractive_qa-{index:05d}", context=context, question=question, answers=[answer])


def generative_record(index: int, seed: int = SEED) -> dict:
    """One generative QA record: the answer is composed from several facts."""
    rng = _record_rng("generative_qa", index, seed)
    people, context = _people_and_paragraph(rng)
    question, answer = rng.choice(_generative_questions(*rng.sample(people, 2)))
    return dict(id=f"generative_qa-{index:05d}", context=context, question=question, answers=[answer])


def every_question(task: str, index: int, seed: int = SEED) -> tuple[str, list[tuple[str, str]]]:
    """Record ``index``'s context with every question the generator could have asked of it.

    The record itself asks one of them; a teacher trained on all of them reads each
    paragraph many times over (`uld.task_teachers`). A dialogue has one question.

    >>> context, questions = every_question("extractive_qa", 0)
    >>> extractive_record(0)["question"] in [q for q, _ in questions], len(questions)
    (True, 11)
    """
    if task == "dialogue_summary":
        record = dialogue_record(index, seed)
        return record["context"], [(record["question"], record["answers"][0])]
    if task == "extractive_qa":
        return _profile(_record_rng(task, index, seed))
    people, context = _people_and_paragraph(_record_rng(task, index, seed))
    if task == "generative_qa":
        return context, [pair for a in people for b in people if a is not b for pair in _generative_questions(a, b)]
    raise ValueError(f"unknown embedded task {task!r}; choose from {', '.join(EMBEDDED_TASKS)}")


def pretraining_text(index: int, seed: int = SEED) -> str:
    """Plain text in the tasks' world but not in their question/answer format, for pretraining.

    Two in three texts are a paragraph about people followed, on a new line, by a recap that
    states some of their facts again, often in other words (so predicting the recap means reading the
    paragraph, as text on the web often repeats itself); one in three is a dialogue
    without its summary. Drawn from its own stream (``"<seed>:pretraining:<index>"``), so
    never a committed record.

    >>> pretraining_text(1).splitlines()[1]
    'Mateo Zanetti comes from Cluj, where Mateo was born in 1998. Mateo owns 5 chickens. Kofi joined the Stonebridge Museum in 1992. Kofi Kowalski was born in Lyon in 1962.'
    >>> pretraining_text(0).startswith("#Person1#")
    True
    """
    rng = _record_rng("pretraining", index, seed)
    if rng.random() < 1 / 3:
        return dialogue_record(index, f"{seed}:pretraining")["context"]
    people, paragraph = _people_and_paragraph(rng)
    recap = [sentence for p in rng.sample(people, rng.randint(1, len(people)))
             for sentence in rng.sample(_facts(rng, p), 2)]
    return f"{paragraph}\n{' '.join(recap)}"


def _people_and_paragraph(rng: random.Random) -> tuple[list[dict], str]:
    taken: set = set()
    people = [_person(rng, taken) for _ in range(rng.randint(2, 3))]
    return people, _paragraph(rng, people)


def _profile(rng: random.Random) -> tuple[str, list[tuple[str, str]]]:
    """An extractive paragraph and every question it answers: one person, and for every kind
    of answer a distractor of the same kind (the city they were born in and the one they live
    in, the year they were born, joined and moved, their job and their former one, two
    numbers of animals, two workplaces), plus a friend with a city and a job of their own.
    Each sentence names its person before the fact, so a left-to-right reader has met the
    subject before the value; what tells the answer from its distractors is the relation the
    question asks about."""
    taken: set = set()
    p, friend = _person(rng, taken), _person(rng, taken)
    p["home"] = rng.choice([city for city in CITIES if city not in (p["city"], friend["city"])])
    p["moved"] = p["born"] + rng.randint(18, 30)
    p["joined"] = p["moved"] + rng.randint(1, 10)
    p["before"] = rng.choice([job for job in OCCUPATIONS if job not in (p["job"], friend["job"])])
    p["weekends"] = rng.choice([org for org in ORGANISATIONS if org != p["org"]])
    p["other_animal"] = rng.choice([animal for animal in ANIMALS if animal != p["animal"]])
    p["other_pets"] = rng.choice([n for n in range(2, 10) if n != p["pets"]])
    name, first = p["name"], p["first"]
    sentences = [rng.choice([
        f"{name} was born in {p['city']} in {p['born']}.",
        f"{name} was born in {p['born']} in {p['city']}.",
        f"{name} comes from {p['city']}, where {first} was born in {p['born']}.",
    ])]
    rest = [
        rng.choice([f"{first} moved to {p['home']} in {p['moved']}.",
                    f"{first} has lived in {p['home']} since {p['moved']}."]),
        rng.choice([f"{first} works as {_a(p['job'])} at {p['org']}.",
                    f"{first} is {_a(p['job'])} at {p['org']} today."]),
        rng.choice([f"{first} joined {p['org']} in {p['joined']}.", f"{first} started at {p['org']} in {p['joined']}."]),
        rng.choice([f"{first} used to work as {_a(p['before'])}.", f"{first} was {_a(p['before'])} before that."]),
        rng.choice([f"{first} keeps {p['pets']} {p['animal']} and {p['other_pets']} {p['other_animal']} at home.",
                    f"{first} owns {p['pets']} {p['animal']} and {p['other_pets']} {p['other_animal']}."]),
        rng.choice([f"{first} volunteers at {p['weekends']} on weekends.",
                    f"On weekends {first} helps out at {p['weekends']}."]),
        rng.choice([f"{first}'s friend {friend['name']} is {_a(friend['job'])} in {friend['city']}.",
                    f"{friend['name']}, a friend of {first}, works as {_a(friend['job'])} in {friend['city']}."]),
    ]
    rng.shuffle(rest)
    blocks = [sentences[0], *rest]
    for filler in rng.sample(FILLERS, k=2):
        blocks.insert(rng.randint(0, len(blocks)), filler)
    pets = [(p["animal"], p["pets"]), (p["other_animal"], p["other_pets"])]
    questions = [
        (f"Where was {name} born?", p["city"]),
        (f"Where does {name} live now?", p["home"]),
        (f"In which year was {name} born?", str(p["born"])),
        (f"In which year did {name} move to {p['home']}?", str(p["moved"])),
        (f"When did {name} join {p['org']}?", str(p["joined"])),
        (f"What is {name}'s job?", p["job"]),
        (f"What was {name}'s job before?", p["before"]),
        (f"Where does {name} work?", p["org"]),
        (f"Where does {name} volunteer?", p["weekends"]),
        *[(f"How many {animal} does {name} have?", str(count)) for animal, count in pets],
    ]
    return " ".join(blocks), questions


def _generative_questions(a: dict, b: dict) -> list[tuple[str, str]]:
    age = a["joined"] - a["born"]
    return [
        (f"How old was {a['name']} when {a['first']} joined {a['org']}?", f"{a['first']} was {age} years old."),
        (f"How many pets do {a['first']} and {b['first']} have together?",
         f"They have {a['pets'] + b['pets']} pets together."),
        (f"Were {a['first']} and {b['first']} born in the same city?",
         f"Yes, both were born in {a['city']}." if a["city"] == b["city"]
         else f"No, {a['first']} was born in {a['city']} and {b['first']} in {b['city']}."),
        (f"Who is older, {a['first']} or {b['first']}?",
         f"{a['first'] if a['born'] < b['born'] else b['first']} is older, born in {min(a['born'], b['born'])}."
         if a["born"] != b["born"] else f"Neither: both were born in {a['born']}."),
        (f"In which country was {a['name']} born?", f"{a['first']} was born in {a['country']}."),
    ]


def dialogue_record(index: int, seed: int = SEED) -> dict:
    """One dialogue with its one-sentence summary (DialogSum's #Person1#/#Person2# style)."""
    rng = _record_rng("dialogue_summary", index, seed)
    first, second = rng.sample(FIRST_NAMES, 2)
    small_talk = rng.sample([
        ("How was your weekend?", "Quiet, I mostly read. And yours?"),
        ("Did you see the rain this morning?", "Yes, I got completely soaked."),
        ("How is your new job going?", "Busy, but I like the people."),
        ("Have you tried the new cafe?", "Not yet, is it good?"),
        ("Is your sister still in town?", "She left on Sunday."),
    ], k=rng.randint(1, 2))
    kind = rng.choice(["meeting", "order", "reschedule"])
    turns = []
    for number, (question, reply) in enumerate(small_talk):
        greeting = f"Hi {second}, it's {first}. " if number == 0 else ""
        turns += [f"#Person1#: {greeting}{question}", f"#Person2#: {reply}"]
    if kind == "meeting":
        day, place, time = rng.choice(WEEKDAYS), rng.choice(PLACES), rng.choice(TIMES)
        topic = rng.choice(["the project plan", "the concert tickets", "the garden", "the trip", "the budget"])
        turns += [f"#Person1#: Could we meet to talk about {topic}?", f"#Person2#: Sure. Is {day} good for you?",
                  f"#Person1#: {day} works. Where?", f"#Person2#: Let's say {place} at {time}.",
                  "#Person1#: Perfect, see you then."]
        summary = rng.choice([
            f"{first} and {second} will meet at {place} on {day} at {time} to talk about {topic}.",
            f"{second} agrees to meet {first} on {day} at {time} at {place} to discuss {topic}.",
        ])
    elif kind == "order":
        item = rng.choice(list(ITEMS))
        count, price = rng.randint(2, 12), ITEMS[item]
        turns += [f"#Person1#: I'd like to order some {item}.", "#Person2#: How many do you need?",
                  f"#Person1#: {count}, please. How much are they?", f"#Person2#: {price} euros each.",
                  "#Person1#: Fine, I'll take them."]
        summary = rng.choice([
            f"{first} orders {count} {item} from {second} at {price} euros each, {count * price} euros in total.",
            f"{first} buys {count} {item} for {count * price} euros from {second}.",
        ])
    else:
        old_day, new_day = rng.sample(WEEKDAYS, 2)
        reason = rng.choice(["a dentist appointment", "a late train", "a family dinner", "a work deadline"])
        turns += [f"#Person1#: About our meeting on {old_day}, I can't make it.", "#Person2#: Oh, what happened?",
                  f"#Person1#: I have {reason}. Could we move it to {new_day}?",
                  f"#Person2#: {new_day} is fine with me.", "#Person1#: Thanks, and sorry again."]
        summary = rng.choice([
            f"{first} moves the meeting with {second} from {old_day} to {new_day} because of {reason}.",
            f"Because of {reason}, {first} asks {second} to move their {old_day} meeting to {new_day}, and {second} agrees.",
        ])
    return dict(id=f"dialogue_summary-{index:05d}", context="\n".join(turns), question="Summarize the dialogue.",
                answers=[summary])


EMBEDDED_TASKS = {"extractive_qa": extractive_record, "generative_qa": generative_record,
                  "dialogue_summary": dialogue_record}


def generate(task: str, seed: int = SEED, sizes: dict | None = None) -> dict[str, list[dict]]:
    """All splits of one embedded task: ``{split: [record, ...]}``, no text in two splits."""
    make = EMBEDDED_TASKS[task]
    sizes = sizes or SPLIT_SIZES
    seen: set = set()
    splits, index = {}, 0
    for split, size in sizes.items():
        records = []
        while len(records) < size:
            record = make(index, seed)
            index += 1
            key = (record["context"], record["question"])
            if key not in seen:
                seen.add(key)
                records.append(record)
        splits[split] = records
    return splits


def write_tasks(out: Path, seed: int = SEED, sizes: dict | None = None) -> list[Path]:
    """Write ``out/<task>/<split>.jsonl`` for every embedded task; returns the paths."""
    written = []
    for task in EMBEDDED_TASKS:
        for split, records in generate(task, seed, sizes).items():
            path = Path(out) / task / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in records),
                            encoding="utf-8")
            written.append(path)
    return written
