"""Everything made from finished runs: LaTeX tables, figures, cross-dataset evaluation and the
feature-distance analysis. Only ``features`` and ``cross`` need torch, and import it lazily."""
