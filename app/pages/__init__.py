"""The app's pages, one module each; each exposes TITLE, SUBTITLE and a page class
that receives its controller."""
