// Loaded in <head> before the page is drawn: the CSS shows what needs a script (.with-js) at
// once, so it does not push the page down when the script at the end runs.
document.documentElement.classList.add("js");
