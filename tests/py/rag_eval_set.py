"""A retrieval eval set that words do not give away (test_rag_eval.py, docs/RAG.md "Eval").

- Facts about made-up things, so nothing is known to the model beforehand.
- File names say nothing (`n01.md` ...), so the title column holds no hint.
- Questions are paraphrased: the thing's name is left out, and the fact is asked with other
  words than the text uses ("started" for "founded", "how long does it take" for "minutes").
- Distractors: for most documents a second one on a near topic (another glassworks, another
  lighthouse, another ferry) with different facts, sharing the question's common words.
- Unanswerable questions, on topics near the corpus, whose answer is in no document.

QUESTIONS: (question, document, phrase): the right chunk is the one of `document` that holds
`phrase`. Written by hand for this repository.
"""

DOCS = {
    "n01.md": """# The Zorbian Glassworks

The Zorbian Glassworks stand on the bank of the Velmora. They were founded in 1742 by Ilsa
Trevane, who came from the northern islands with three apprentices.

The great furnace burns at 1340 degrees and is fed only with beech charcoal. Its pale blue,
called cobalt mist, comes from crushed lapis added to the melt.
""",
    "n02.md": """# Hollin glass museum

The glass museum of Hollin shows bottles, lamps and windows from six centuries. Its oldest piece
is a green drinking cup dug out of a well in 1911. Entry is free on the first Monday of a month,
and the museum shop sells copies of the cup.
""",
    "n03.md": """# Kettleback turtles

Kettleback turtles live in the warm springs of the Ossary valley. Their shells carry
copper-coloured ridges that hold heat for hours after sunset.

Each spring a female lays exactly seven eggs, and the hatchlings need ninety days to leave the
nest.
""",
    "n04.md": """# Marsh terrapins of Lowfen

The marsh terrapins of Lowfen sleep buried in mud from November to March. They are small, with
a dark olive shell, and live on snails and water beetles. Fishermen count them every August.
""",
    "n05.md": """# Quillon Harbor lighthouse

The lighthouse at Quillon Harbor was lit for the first time in 1887. Its lamp turns once every
eleven seconds and can be seen forty kilometres out at sea.

The last keeper, Marten Odell, tended the flame for thirty-one winters and kept a diary of every
storm.
""",
    "n06.md": """# Greystack beacon

The Greystack beacon is an unmanned light on a rock north of the cape, painted in red and white
bands. It was automated in 1964 and runs on solar panels and a battery bank.
""",
    "n07.md": """# Pemberly sourdough

Pemberly sourdough is a rye loaf from the hill village of Pemberly. Its starter, Old Maud, is
said to be two hundred years old and is fed with honey water every Sunday.

The dough rests for thirty-six hours in cold cellars before it goes into a stone oven at dawn.
""",
    "n08.md": """# Wheat rolls of Ansel market

The bakers of Ansel market sell soft wheat rolls glazed with egg. They bake three batches a day
in electric ovens, and the last batch is sold at half price after six in the evening.
""",
    "n09.md": """# The Astraline satellite

Astraline was launched to study lightning over deserts. It circles the Earth in a polar orbit
612 kilometres up and goes around once every 97 minutes. Its camera counts sprites, red flashes
high above thunderstorms.
""",
    "n10.md": """# Tindle river ferry

The Tindle ferry is pulled across the water on a chain by two grey horses. A crossing takes
eight minutes and costs three copper pennies for a person or a silver coin for a cart. It has
carried passengers since 1803 without a single accident.
""",
    "n11.md": """# Dunmore steam ferry

The steam ferry at Dunmore crosses the estuary every hour in summer. It carries forty cars and
has a café on the upper deck. In winter it stops when the wind is stronger than gale force.
""",
    "n12.md": """# Glimmerwort

Glimmerwort is a moss that glows faintly green in the caves of Harrowdeep. It grows only on
limestone that stays wet all year. Healers dry it and brew a bitter tea that is said to cure
snow blindness.
""",
    "n13.md": """# The Brassmoor clock tower

The clock tower of Brassmoor has four faces and a bell, Big Orla, that weighs nine tonnes. Its
clockwork was built by Tobias Fenwright in 1921 and must be wound by hand every eight days with a
crank that takes two people to turn.
""",
    "n14.md": """# Velvet hornets

The velvet hornet is a harmless insect covered in soft orange fur. It drinks the nectar of
moonflowers and flies only at night. Its round paper nests, the size of a melon, hang under barn
eaves and house about four hundred workers.
""",
    "n15.md": """# The Ormsby cheese festival

Every October the town of Ormsby rolls wheels of cheese down Saddle Hill, and the maker of the
fastest wheel wins a golden ladle. The best known cheese there, Ormsby Blue, is aged for fourteen
months in salt caves.
""",
    "n16.md": """# Nimbus kites

Nimbus kites are flown in the coastal town of Saltmere. A nimbus kite has a hexagonal frame of
split bamboo and a tail of twenty-four silk ribbons. The longest flight, nineteen hours, was made
by the twins Cora and Dell Ashby.
""",
    "n17.md": """# Harrow Lane library

The Harrow Lane library opened in 1910 with a gift of 6000 books from the merchant Elias Crane.
Its reading room has a glass dome painted with the southern constellations. Borrowers may keep a
book for twenty-one days.
""",
    "n18.md": """# The Frostpeak railway

The Frostpeak railway climbs from Lowmarsh to a summit station at 3120 metres. Its red trains use
a toothed rack rail on slopes of up to twenty-five percent. The line was cut through granite by
900 workers between 1896 and 1904.
""",
    "n19.md": """# Coastal tramway of Brill

The tramway of Brill runs along the sea front for six kilometres. Its blue cars were built in
1950 and are still driven by hand. A day ticket costs the same as a cup of tea.
""",
    "n20.md": """# Saffron moths

The saffron moth has yellow wings with two black eye spots that frighten birds away. Its
caterpillars eat only the leaves of the wild crocus, and the adults live for just nine days.
""",
    "n21.md": """# Corvane salt flats

The salt flats of Corvane are harvested by raking the crust after the summer floods dry out. A
good year gives twelve hundred tonnes. The salt is pink because of algae in the brine.
""",
    "n22.md": """# Whistling stones of Arrin

On the cliffs of Arrin stand nine limestone pillars with holes worn by the wind. In a westerly
gale they make a low whistle that can be heard in the village two kilometres away.
""",
    "n23.md": """# Bellweather pigeons

Bellweather pigeons were kept by the postal service of Tarrow to carry letters between the
islands. The best birds flew the ninety kilometres in under two hours. The service ended in 1932.
""",
    "n24.md": """# Amberlin violins

The workshop of Amberlin has made violins since 1780. Its varnish is mixed from amber, linseed
oil and a resin that the makers keep secret. A finished violin takes seven months.
""",
    "n25.md": """# Marrowdeep copper mine

Marrowdeep was a copper mine that reached 480 metres below ground. Ponies pulled the ore carts
until 1911, when an electric winch replaced them. It closed in 1958 after a flood.
""",
}

# (question, document, phrase in the right chunk)
QUESTIONS = [
    ("Who started the glass factory on the river, and in which year?", "n01.md", "1742"),
    ("What fuel keeps the glassmakers' kiln going?", "n01.md", "beech charcoal"),
    ("How many eggs does one of the spring-dwelling reptiles lay?", "n03.md", "seven eggs"),
    ("How far away can sailors see the harbour light?", "n05.md", "forty kilometres"),
    ("Who looked after the coastal lamp for more than thirty years?", "n05.md", "Marten Odell"),
    ("How often is the bread starter given something to eat?", "n07.md", "every Sunday"),
    ("How long is the rye dough left before baking?", "n07.md", "thirty-six hours"),
    ("How long does the lightning-watching spacecraft need to go once around the planet?", "n09.md",
     "97 minutes"),
    ("What animals drag the boat across the water on a chain?", "n10.md", "grey horses"),
    ("Which plant found in caverns gives off a green light?", "n12.md", "glows faintly green"),
    ("How heavy is the bell of the tower with four clock faces?", "n13.md", "nine tonnes"),
    ("How frequently must someone crank the mechanism of the town clock?", "n13.md", "every eight days"),
    ("What does the furry orange insect feed on?", "n14.md", "moonflowers"),
    ("What prize goes to whoever makes the quickest rolling wheel?", "n15.md", "golden ladle"),
    ("For how long is the blue cheese matured?", "n15.md", "fourteen months"),
    ("How many ribbons hang from the six-sided kite?", "n16.md", "twenty-four silk ribbons"),
    ("Who gave the books that the library started with?", "n17.md", "Elias Crane"),
    ("How high is the top station of the mountain line?", "n18.md", "3120 metres"),
    ("How many labourers built the rack railway through the granite?", "n18.md", "900 workers"),
    ("What do the caterpillars of the yellow-winged insect eat?", "n20.md", "wild crocus"),
    ("Why is the harvested salt coloured?", "n21.md", "algae"),
    ("How far off can the wind-blown pillars be heard?", "n22.md", "two kilometres"),
    ("How long did the best messenger birds need between the islands?", "n23.md", "under two hours"),
    ("What goes into the finish of the string instruments?", "n24.md", "amber, linseed"),
    ("What replaced the ponies hauling ore underground?", "n25.md", "electric winch"),
]

# Near the corpus's topics, answered by no document.
UNANSWERABLE = [
    "What is the name of the glassworks' current director?",
    "How many passengers did the steam ferry carry in 1999?",
    "Which composer wrote an opera about the clock tower?",
    "How many visitors does the glass museum receive in a year?",
    "How tall is the tower of the harbour lighthouse?",
    "How much does a loaf of the rye bread cost?",
    "Which rocket carried the lightning-watching spacecraft into orbit?",
    "How long do the spring-dwelling reptiles live?",
    "Who designed the dome of the library reading room?",
    "How many passengers fit into one car of the mountain railway?",
    "What is the population of the town that holds the cheese race?",
    "In which year was the first kite festival of the coastal town held?",
    "How deep are the caves where the glowing moss grows?",
    "Who was the last director of the copper mine?",
]

# Off the corpus's topics (abstention: docs/RAG.md "Unanswerable questions").
OFF_TOPIC = [
    "What is the capital of France?",
    "How do I reset the password of my wifi router?",
    "Who won the football world cup in 2010?",
    "What is the boiling point of mercury?",
    "Which programming language uses a borrow checker?",
    "How many moons does Jupiter have?",
    "What is a good recipe for tomato soup?",
    "When did the Roman empire fall?",
    "How do vaccines train the immune system?",
    "What is the speed of light in a vacuum?",
    "Who painted the Mona Lisa?",
    "How do I file my income tax return?",
]
