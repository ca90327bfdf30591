"""The references the methods boilerplate cites (BibTeX keys -> entries)."""

from __future__ import annotations

REFERENCES = {
    "esteban2019fmriprep": {
        "type": "article",
        "author": "Esteban, Oscar and Markiewicz, Christopher J. and Blair, Ross W. and Moodie, "
        "Craig A. and Isik, A. Ilkay and Erramuzpe, Asier and Kent, James D. and Goncalves, "
        "Mathias and DuPre, Elizabeth and Snyder, Madeleine and others",
        "title": "fMRIPrep: a robust preprocessing pipeline for functional MRI",
        "journal": "Nature Methods",
        "volume": "16",
        "pages": "111--116",
        "year": "2019",
        "doi": "10.1038/s41592-018-0235-4",
    },
    "whitfield2012conn": {
        "type": "article",
        "author": "Whitfield-Gabrieli, Susan and Nieto-Castanon, Alfonso",
        "title": "Conn: a functional connectivity toolbox for correlated and anticorrelated "
        "brain networks",
        "journal": "Brain Connectivity",
        "volume": "2",
        "number": "3",
        "pages": "125--141",
        "year": "2012",
        "doi": "10.1089/brain.2012.0073",
    },
    "behzadi2007compcor": {
        "type": "article",
        "author": "Behzadi, Yashar and Restom, Khaled and Liau, Joy and Liu, Thomas T.",
        "title": "A component based noise correction method (CompCor) for BOLD and perfusion "
        "based fMRI",
        "journal": "NeuroImage",
        "volume": "37",
        "number": "1",
        "pages": "90--101",
        "year": "2007",
        "doi": "10.1016/j.neuroimage.2007.04.042",
    },
    "power2012motion": {
        "type": "article",
        "author": "Power, Jonathan D. and Barnes, Kelly A. and Snyder, Abraham Z. and "
        "Schlaggar, Bradley L. and Petersen, Steven E.",
        "title": "Spurious but systematic correlations in functional connectivity MRI networks "
        "arise from subject motion",
        "journal": "NeuroImage",
        "volume": "59",
        "number": "3",
        "pages": "2142--2154",
        "year": "2012",
        "doi": "10.1016/j.neuroimage.2011.10.018",
    },
    "friston1994extent": {
        "type": "article",
        "author": "Friston, Karl J. and Worsley, Keith J. and Frackowiak, Richard S. J. and "
        "Mazziotta, John C. and Evans, Alan C.",
        "title": "Assessing the significance of focal activations using their spatial extent",
        "journal": "Human Brain Mapping",
        "volume": "1",
        "number": "3",
        "pages": "210--220",
        "year": "1994",
        "doi": "10.1002/hbm.460010306",
    },
    "worsley1996unified": {
        "type": "article",
        "author": "Worsley, Keith J. and Marrett, Sean and Neelin, Peter and Vandal, Alain C. "
        "and Friston, Karl J. and Evans, Alan C.",
        "title": "A unified statistical approach for determining significant signals in images "
        "of cerebral activation",
        "journal": "Human Brain Mapping",
        "volume": "4",
        "number": "1",
        "pages": "58--73",
        "year": "1996",
        "doi": "10.1002/(SICI)1097-0193(1996)4:1<58::AID-HBM4>3.0.CO;2-O",
    },
    "chumbley2010topological": {
        "type": "article",
        "author": "Chumbley, Justin and Worsley, Keith and Flandin, Guillaume and Friston, Karl",
        "title": "Topological FDR for neuroimaging",
        "journal": "NeuroImage",
        "volume": "49",
        "number": "4",
        "pages": "3057--3064",
        "year": "2010",
        "doi": "10.1016/j.neuroimage.2009.10.090",
    },
    "penny2007spm": {
        "type": "book",
        "author": "Penny, William D. and Friston, Karl J. and Ashburner, John T. and Kiebel, "
        "Stefan J. and Nichols, Thomas E.",
        "title": "Statistical Parametric Mapping: The Analysis of Functional Brain Images",
        "publisher": "Academic Press",
        "year": "2007",
        "doi": "10.1016/B978-0-12-372560-8.X5000-1",
    },
    "freedman1983nonstochastic": {
        "type": "article",
        "author": "Freedman, David and Lane, David",
        "title": "A nonstochastic interpretation of reported significance levels",
        "journal": "Journal of Business & Economic Statistics",
        "volume": "1",
        "number": "4",
        "pages": "292--298",
        "year": "1983",
        "doi": "10.1080/07350015.1983.10509354",
    },
    "winkler2014permutation": {
        "type": "article",
        "author": "Winkler, Anderson M. and Ridgway, Gerard R. and Webster, Matthew A. and "
        "Smith, Stephen M. and Nichols, Thomas E.",
        "title": "Permutation inference for the general linear model",
        "journal": "NeuroImage",
        "volume": "92",
        "pages": "381--397",
        "year": "2014",
        "doi": "10.1016/j.neuroimage.2014.01.060",
    },
    "smith2009tfce": {
        "type": "article",
        "author": "Smith, Stephen M. and Nichols, Thomas E.",
        "title": "Threshold-free cluster enhancement: addressing problems of smoothing, "
        "threshold dependence and localisation in cluster inference",
        "journal": "NeuroImage",
        "volume": "44",
        "number": "1",
        "pages": "83--98",
        "year": "2009",
        "doi": "10.1016/j.neuroimage.2008.03.061",
    },
    "phipson2010permutation": {
        "type": "article",
        "author": "Phipson, Belinda and Smyth, Gordon K.",
        "title": "Permutation P-values should never be zero: calculating exact P-values when "
        "permutations are randomly drawn",
        "journal": "Statistical Applications in Genetics and Molecular Biology",
        "volume": "9",
        "number": "1",
        "pages": "Article 39",
        "year": "2010",
        "doi": "10.2202/1544-6115.1585",
    },
    "kriegeskorte2009circular": {
        "type": "article",
        "author": "Kriegeskorte, Nikolaus and Simmons, W. Kyle and Bellgowan, Patrick S. F. and "
        "Baker, Chris I.",
        "title": "Circular analysis in systems neuroscience: the dangers of double dipping",
        "journal": "Nature Neuroscience",
        "volume": "12",
        "number": "5",
        "pages": "535--540",
        "year": "2009",
        "doi": "10.1038/nn.2303",
    },
    "hyvarinen1999fastica": {
        "type": "article",
        "author": "Hyvärinen, Aapo",
        "title": "Fast and robust fixed-point algorithms for independent component analysis",
        "journal": "IEEE Transactions on Neural Networks",
        "volume": "10",
        "number": "3",
        "pages": "626--634",
        "year": "1999",
        "doi": "10.1109/72.761722",
    },
    "smith2014migp": {
        "type": "article",
        "author": "Smith, Stephen M. and Hyvärinen, Aapo and Varoquaux, Gaël and Miller, Karla "
        "L. and Beckmann, Christian F.",
        "title": "Group-PCA for very large fMRI datasets",
        "journal": "NeuroImage",
        "volume": "101",
        "pages": "738--749",
        "year": "2014",
        "doi": "10.1016/j.neuroimage.2014.07.051",
    },
    "nickerson2017dualreg": {
        "type": "article",
        "author": "Nickerson, Lisa D. and Smith, Stephen M. and Öngür, Döst and Beckmann, "
        "Christian F.",
        "title": "Using dual regression to investigate network shape and amplitude in "
        "functional connectivity analyses",
        "journal": "Frontiers in Neuroscience",
        "volume": "11",
        "pages": "115",
        "year": "2017",
        "doi": "10.3389/fnins.2017.00115",
    },
    "yeo2011networks": {
        "type": "article",
        "author": "Yeo, B. T. Thomas and Krienen, Fenna M. and Sepulcre, Jorge and Sabuncu, "
        "Mert R. and Lashkari, Danial and Hollinshead, Marisa and Roffman, Joshua L. and "
        "Smoller, Jordan W. and Zöllei, Lilla and Polimeni, Jonathan R. and others",
        "title": "The organization of the human cerebral cortex estimated by intrinsic "
        "functional connectivity",
        "journal": "Journal of Neurophysiology",
        "volume": "106",
        "number": "3",
        "pages": "1125--1165",
        "year": "2011",
        "doi": "10.1152/jn.00338.2011",
    },
    "schaefer2018parcellation": {
        "type": "article",
        "author": "Schaefer, Alexander and Kong, Ru and Gordon, Evan M. and Laumann, Timothy "
        "O. and Zuo, Xi-Nian and Holmes, Avram J. and Eickhoff, Simon B. and Yeo, B. T. Thomas",
        "title": "Local-global parcellation of the human cerebral cortex from intrinsic "
        "functional connectivity MRI",
        "journal": "Cerebral Cortex",
        "volume": "28",
        "number": "9",
        "pages": "3095--3114",
        "year": "2018",
        "doi": "10.1093/cercor/bhx179",
    },
    "makris2006harvardoxford": {
        "type": "article",
        "author": "Makris, Nikos and Goldstein, Jill M. and Kennedy, David and Hodge, Steven M. "
        "and Caviness, Verne S. and Faraone, Stephen V. and Tsuang, Ming T. and Seidman, "
        "Larry J.",
        "title": "Decreased volume of left and total anterior insular lobule in schizophrenia",
        "journal": "Schizophrenia Research",
        "volume": "83",
        "number": "2--3",
        "pages": "155--171",
        "year": "2006",
        "doi": "10.1016/j.schres.2005.11.020",
    },
    "gorgolewski2011nipype": {
        "type": "article",
        "author": "Gorgolewski, Krzysztof and Burns, Christopher D. and Madison, Cindee and "
        "Clark, Dav and Halchenko, Yaroslav O. and Waskom, Michael L. and Ghosh, Satrajit S.",
        "title": "Nipype: a flexible, lightweight and extensible neuroimaging data processing "
        "framework in Python",
        "journal": "Frontiers in Neuroinformatics",
        "volume": "5",
        "pages": "13",
        "year": "2011",
        "doi": "10.3389/fninf.2011.00013",
    },
    "abraham2014nilearn": {
        "type": "article",
        "author": "Abraham, Alexandre and Pedregosa, Fabian and Eickenberg, Michael and Gervais, "
        "Philippe and Mueller, Andreas and Kossaifi, Jean and Gramfort, Alexandre and Thirion, "
        "Bertrand and Varoquaux, Gaël",
        "title": "Machine learning for neuroimaging with scikit-learn",
        "journal": "Frontiers in Neuroinformatics",
        "volume": "8",
        "pages": "14",
        "year": "2014",
        "doi": "10.3389/fninf.2014.00014",
    },
    "ciric2022templateflow": {
        "type": "article",
        "author": "Ciric, Rastko and Thompson, William H. and Lorenz, Romy and Goncalves, "
        "Mathias and MacNicol, Eilidh E. and Markiewicz, Christopher J. and Halchenko, "
        "Yaroslav O. and Ghosh, Satrajit S. and Gorgolewski, Krzysztof J. and Poldrack, "
        "Russell A. and Esteban, Oscar",
        "title": "TemplateFlow: FAIR-sharing of multi-scale, multi-species brain models",
        "journal": "Nature Methods",
        "volume": "19",
        "pages": "1568--1571",
        "year": "2022",
        "doi": "10.1038/s41592-022-01681-2",
    },
    "pedregosa2011sklearn": {
        "type": "article",
        "author": "Pedregosa, Fabian and Varoquaux, Gaël and Gramfort, Alexandre and Michel, "
        "Vincent and Thirion, Bertrand and Grisel, Olivier and Blondel, Mathieu and "
        "Prettenhofer, Peter and Weiss, Ron and Dubourg, Vincent and others",
        "title": "Scikit-learn: machine learning in Python",
        "journal": "Journal of Machine Learning Research",
        "volume": "12",
        "pages": "2825--2830",
        "year": "2011",
    },
}


def bibtex(keys) -> str:
    """Return the BibTeX entries of ``keys`` (in that order)."""
    entries = []
    for key in keys:
        fields = dict(REFERENCES[key])
        kind = fields.pop("type")
        body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields.items())
        entries.append(f"@{kind}{{{key},\n{body}\n}}")
    return "\n\n".join(entries) + "\n"


def short_author(key: str) -> str:
    """Return ``Surname et al. (year)`` of a reference, for the text."""
    fields = REFERENCES[key]
    authors = fields["author"].split(" and ")
    surname = authors[0].split(",")[0]
    if len(authors) == 2:
        surname += " & " + authors[1].split(",")[0]
    elif len(authors) > 2:
        surname += " et al."
    return f"{surname} {fields['year']}"


def formatted(key: str) -> str:
    """Return a reference as plain text: authors (year). Title. Journal volume:pages. doi."""
    fields = REFERENCES[key]
    authors = fields["author"].replace(" and others", " et al.").replace(" and ", ", ")
    where = fields.get("journal") or fields.get("publisher", "")
    volume = f" {fields['volume']}" if "volume" in fields else ""
    pages = f":{fields['pages'].replace('--', '-')}" if "pages" in fields else ""
    doi = f" doi:{fields['doi']}" if "doi" in fields else ""
    return f"{authors} ({fields['year']}). {fields['title']}. {where}{volume}{pages}.{doi}"
