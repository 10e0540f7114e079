"""Grading: `labkit grade` runs learners' notebooks in sandboxes and keeps a gradebook.

:mod:`~labkit.course.grading.submission` reads and validates a notebook,
:mod:`~labkit.course.grading.sandbox` runs it isolated from the grader and from other learners,
:mod:`~labkit.course.grading.grader` scores it, :mod:`~labkit.course.grading.gradebook` stores
the grades and :mod:`~labkit.course.grading.feedback` writes what each learner reads.
"""
