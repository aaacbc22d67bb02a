"""Space-respecting genetic operators, pure numpy (pymoo is wrapped in `hwnas.search.pymoo_adapter`)."""

from hwnas.search.operators.crossover import CrossoverKind, crossover
from hwnas.search.operators.duplicates import duplicate_mask
from hwnas.search.operators.genes import GeneSpace, genome_keys
from hwnas.search.operators.mutation import mutate
from hwnas.search.operators.repair import repair
from hwnas.search.operators.sampling import initial_population, random_genomes

__all__ = [
    "CrossoverKind", "GeneSpace", "crossover", "duplicate_mask", "genome_keys", "initial_population",
    "mutate", "random_genomes", "repair",
]
