//! The graph rules of a pipeline, as pure functions over the parsed form.
//!
//! Every rule reports with the span of the offending token; all rules run, so one compile shows every
//! problem. On success the checks also yield the evaluation levels of the outputs.

use std::collections::{BTreeSet, HashMap};

use quote::ToTokens;
use syn::Ident;

use super::ast::Pipeline;
use crate::leaves::LEAVES;
use crate::step::Errors;

/// What the checks learned: `after` edges between outputs and the levels they form.
pub(crate) struct Checked {
    /// `(before, after)` output indexes: `after` waits for `before`.
    pub(crate) edges: Vec<(usize, usize)>,
    /// `(output, binding, name)`: the output waits for output `name` of the pipeline used as that binding
    /// (`after checks.log`), or for all of its outputs (`after checks`, `name` is `None`).
    pub(crate) composed_after: Vec<(usize, usize, Option<Ident>)>,
    /// Output indexes by level of `after` (and value) edges.
    pub(crate) levels: Vec<Vec<usize>>,
    /// Which parts wait for the values of outputs.
    pub(crate) values: Values,
}

pub(crate) fn check(p: &Pipeline, errors: &mut Errors) -> Checked {
    check_duplicates(p, errors);
    check_loops(p, errors);
    check_binding_uses(p, errors);
    check_outputs(p, errors);
    check_unused_bindings(p, errors);
    check_composed(p, errors);
    check_step_names(p, errors);
    let (mut edges, composed_after) = after_edges(p, errors);
    let (values, extra) = values(p, &edges, errors);
    edges.extend(extra);
    edges.sort_unstable();
    edges.dedup();
    let levels = levels(p, &edges, errors);
    for (j, b) in p.bindings.iter().enumerate() {
        // Rule: a pipeline used in this one is scheduled with it, before any value is known.
        if b.pipeline && values.binding_stage[j] > 0 {
            errors.push(
                b.span(),
                format!(
                    "`{}` uses a pipeline whose inputs wait for the value of an output, which a pipeline used in this \
                     one cannot do (yet): bind its inputs to inputs and bindings",
                    b.pattern_text()
                ),
            );
        }
    }
    Checked {
        edges,
        composed_after,
        levels,
        values,
    }
}

// Rule: a step is a function, named in snake case: a name that starts with a capital letter is a type (a
// struct, an enum), which cannot be a step. (Reported here, once, rather than by rustc once per use of the
// type as a step.)
fn check_step_names(p: &Pipeline, errors: &mut Errors) {
    for b in p.bindings.iter().filter(|b| !b.pipeline) {
        let Some(last) = b.step.path.segments.last() else {
            continue;
        };
        let name = last.ident.to_string();
        if name.starts_with(|c: char| c.is_uppercase()) {
            let written = b.step.to_token_stream().to_string().replace(' ', "");
            errors.push_spanned(
                &b.step,
                format!(
                    "`{written}` is not a `#[step]` function: it is named like a type, and a step is a function \
                     marked `#[step]` (`fn toolchain(…) -> Container`); call one here (a step that builds a value of \
                     this type, for instance)"
                ),
            );
        }
    }
}

// Rule: a pipeline used in this one is used at the top level (not in a `for` or `if` block), and no output
// runs a leaf on it: its outputs are its own.
fn check_composed(p: &Pipeline, errors: &mut Errors) {
    for b in p.bindings.iter().filter(|b| b.pipeline) {
        if let Some(l) = b.each {
            errors.push(
                b.span(),
                format!(
                    "`{}` uses a pipeline inside `{} {{ … }}`, which is not supported (yet): use it outside the block",
                    b.pattern_text(),
                    loop_text(p, l)
                ),
            );
        }
    }
    for o in &p.outputs {
        if let Some((_, b)) = p.binding(&o.target.to_string())
            && b.pipeline
        {
            errors.push(
                o.target.span(),
                format!(
                    "`{t}` is a pipeline used in this one, not an object: its outputs are `outputs.{t}.<name>`; run \
                     leaves on its objects inside it (`out built = tc.sync();` there makes `{t}.built` an object here)",
                    t = o.target
                ),
            );
        }
    }
}

// Rule: every input, binding and output has its own name, so each reference means one thing.
fn check_duplicates(p: &Pipeline, errors: &mut Errors) {
    let mut seen: HashMap<String, &'static str> = HashMap::new();
    let loop_vars = p
        .loops
        .iter()
        .filter(|l| l.cond.is_none())
        .flat_map(|l| std::iter::once(&l.key).chain(l.value.as_ref()))
        .map(|v| (v, "loop variable"));
    let names = p
        .inputs
        .iter()
        .map(|i| (&i.name, "input"))
        .chain(loop_vars)
        .chain(p.bindings.iter().flat_map(|b| b.names().map(|n| (n, "binding"))));
    for (name, kind) in names {
        if let Some(first) = seen.get(&name.to_string()) {
            let article = if first.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            errors.push(
                name.span(),
                format!("duplicate name `{name}`: it is already the name of {article} {first}; rename this {kind}"),
            );
        } else {
            seen.insert(
                name.to_string(),
                match kind {
                    "binding" => "earlier binding",
                    other => other,
                },
            );
        }
    }
    let mut outputs = BTreeSet::new();
    for o in &p.outputs {
        if !outputs.insert(o.name.to_string()) {
            errors.push(
                o.name.span(),
                format!("duplicate output `{}`: each output needs its own name", o.name),
            );
        } else if let Some(kind) = seen.get(&o.name.to_string()) {
            // Rule: an output's name is a name in the pipeline too (its value can feed steps), so it cannot
            // be the name of an input, a loop variable or a binding.
            let kind = kind.trim_start_matches("earlier ");
            let article = if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
                "an"
            } else {
                "a"
            };
            errors.push(
                o.name.span(),
                format!(
                    "output `{}` has the name of {article} {kind}; rename the output (its value is known by its name)",
                    o.name
                ),
            );
        }
    }
}

// Rule: a loop goes over an input, which is what gives the loop its elements at run time; a condition is a
// `bool` input, or a variable of the loop around it (one condition per element).
fn check_loops(p: &Pipeline, errors: &mut Errors) {
    for l in &p.loops {
        let name = l.input.to_string();
        if p.input(&name).is_some() {
            continue;
        }
        if l.cond.is_some()
            && let Some(of) = p.loop_var(&name)
        {
            if !p.within(l.parent, Some(of)) {
                errors.push(
                    l.input.span(),
                    format!("`{name}` is only defined inside `{} {{ … }}`", loop_text(p, of)),
                );
            }
            continue;
        }
        let inputs: Vec<String> = p.inputs.iter().map(|i| i.name.to_string()).collect();
        let what = if p.binding(&name).is_some() {
            format!("`{name}` is a binding, not an input")
        } else {
            unknown("input", &l.input, &inputs)
        };
        errors.push(
            l.input.span(),
            match l.cond {
                None => {
                    format!("{what}; a loop goes over one of the pipeline's inputs, a collection such as `Vec<String>`")
                }
                Some(_) => format!("{what}; a condition is one of the pipeline's inputs, a `bool`"),
            },
        );
    }
}

/// `for v in versions`, for messages.
fn loop_text(p: &Pipeline, l: usize) -> String {
    let lp = &p.loops[l];
    match (&lp.value, lp.cond) {
        (_, Some(false)) => format!("if {}", lp.input),
        (_, Some(true)) => format!("if !{}", lp.input),
        (Some(v), None) => format!("for ({}, {v}) in {}", lp.key, lp.input),
        (None, None) => format!("for {} in {}", lp.key, lp.input),
    }
}

/// What a binding of block `l` is outside it, for messages.
fn block_value(p: &Pipeline, l: usize) -> String {
    match p.loops[l].cond {
        Some(_) => format!("exists only inside `{} {{ … }}`", loop_text(p, l)),
        None => format!("has one value per element of `{}`", loop_text(p, l)),
    }
}

/// The outermost block of `chain(theirs)` that block `each` is not inside: what a name declared in `theirs`
/// is cut off by, seen from `each` (`None` when `each` is inside `theirs`).
fn cut_off_by(p: &Pipeline, theirs: Option<usize>, each: Option<usize>) -> Option<usize> {
    p.chain(theirs).into_iter().find(|&c| !p.within(each, Some(c)))
}

// Rule: a loop variable exists only inside its loop, and a binding inside its block; a binding of a loop
// has one value per element, so after its loop (in the block around it) it is the map of those values, and
// another loop cannot use it.
fn check_loop_scope(p: &Pipeline, used: &Ident, each: Option<usize>, errors: &mut Errors) -> bool {
    let text = used.to_string();
    if let Some(l) = p.loop_var(&text) {
        if !p.within(each, Some(l)) {
            errors.push(
                used.span(),
                format!("`{text}` is only defined inside `{} {{ … }}`", loop_text(p, l)),
            );
        }
        return true;
    }
    let Some((_, b)) = p.binding(&text) else {
        return false;
    };
    let Some(cut) = cut_off_by(p, b.each, each) else {
        return false;
    };
    if b.each == Some(cut) && p.loops[cut].cond.is_none() {
        // After its loop: the map of its values, unless the user is in another loop.
        if let Some(mine) = p.enclosing_loop(each) {
            errors.push(
                used.span(),
                format!(
                    "`{text}` has one value per element of `{}`, so `{}` cannot use it; use it after its loop, \
                     where it is a map keyed by element",
                    loop_text(p, cut),
                    loop_text(p, mine)
                ),
            );
        }
        return false;
    }
    // Cut off by an `if` (the binding's own block, or one around its loop), or in an `if` inside a loop.
    let block = match b.each {
        Some(l) if p.loops[l].cond.is_some() => l,
        _ => cut,
    };
    errors.push(
        used.span(),
        format!(
            "`{text}` {}: use it inside that block (an output there is an `Option`, `None` when the condition is \
             false)",
            block_value(p, block)
        ),
    );
    false
}

// Rule: an argument may only use inputs and bindings defined above it, as in a function body.
fn check_binding_uses(p: &Pipeline, errors: &mut Errors) {
    for (i, b) in p.bindings.iter().enumerate() {
        for used in &b.uses {
            if p.input(&used.to_string()).is_some() || check_loop_scope(p, used, b.each, errors) {
                continue;
            }
            if p.binding(&used.to_string()).is_none()
                && let Some(v) = p.output(&used.to_string())
            {
                check_value_use(p, used, v, b.each, b.pos, errors);
                continue;
            }
            match p.binding(&used.to_string()) {
                Some((j, _)) if j < i => {}
                Some((j, _)) if j == i => errors.push(
                    used.span(),
                    format!("`{used}` uses itself: a binding cannot be an argument of its own step"),
                ),
                Some(_) => errors.push(
                    used.span(),
                    format!("`{used}` is used before it is defined; move `let {used} = …;` above this line"),
                ),
                None => {
                    let scope = in_scope(p, i);
                    errors.push(used.span(), unknown("binding", used, &scope));
                }
            }
        }
    }
}

// Rule: an output's value may feed a later step or leaf argument, like a variable defined above, inside the
// block the output is declared in (in a loop: the same element's value).
fn check_value_use(p: &Pipeline, used: &Ident, v: usize, each: Option<usize>, pos: usize, errors: &mut Errors) {
    let out = &p.outputs[v];
    if let Some(cut) = cut_off_by(p, out.each, each) {
        let what = match p.enclosing_loop(out.each) {
            Some(l) if !p.within(each, Some(l)) => format!(
                "has one value per element of `{}`, so it can feed steps inside that loop only (each element's \
                 value feeds that element's steps)",
                loop_text(p, l)
            ),
            _ => {
                let block = out.each.filter(|&l| p.loops[l].cond.is_some()).unwrap_or(cut);
                format!(
                    "exists only inside `{} {{ … }}`, so it can feed steps inside that block only",
                    loop_text(p, block)
                )
            }
        };
        errors.push(used.span(), format!("the value of `{used}` {what}"));
    } else if out.pos > pos {
        errors.push(
            used.span(),
            format!("the value of `{used}` is used before it is defined; move `out {used} = …;` above this line"),
        );
    }
}

/// Which outputs' values each binding and output needs, directly or through the bindings it uses.
pub(crate) struct Values {
    /// Per binding: the outputs whose values it needs (transitively), and its stage.
    pub(crate) binding_stage: Vec<usize>,
    /// Per output: its stage (0: built before anything is sent; n: once the values of stage n - 1 are known).
    pub(crate) output_stage: Vec<usize>,
}

// Rule: a value cannot feed the step its own output needs (it would wait for itself).
fn values(p: &Pipeline, after: &[(usize, usize)], errors: &mut Errors) -> (Values, Vec<(usize, usize)>) {
    let direct = |uses: &[Ident]| -> Vec<usize> {
        let mut v: Vec<usize> = uses
            .iter()
            .filter(|u| p.binding(&u.to_string()).is_none() && p.input(&u.to_string()).is_none())
            .filter_map(|u| p.output(&u.to_string()))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let binding_direct: Vec<Vec<usize>> = p.bindings.iter().map(|b| direct(&b.uses)).collect();
    let output_direct: Vec<Vec<usize>> = p.outputs.iter().map(|o| direct(&o.uses)).collect();
    let nb = p.bindings.len();
    let no = p.outputs.len();
    // Transitive values of bindings and outputs.
    let mut vals_b: Vec<BTreeSet<usize>> = binding_direct.iter().map(|d| d.iter().copied().collect()).collect();
    let mut vals_o: Vec<BTreeSet<usize>> = output_direct.iter().map(|d| d.iter().copied().collect()).collect();
    for _ in 0..=(nb + no) {
        let mut changed = false;
        for i in 0..nb {
            let mut add = BTreeSet::new();
            for u in &p.bindings[i].uses {
                if let Some((j, _)) = p.binding(&u.to_string()) {
                    add.extend(vals_b[j].iter().copied());
                }
            }
            let before = vals_b[i].len();
            vals_b[i].extend(add);
            changed |= vals_b[i].len() != before;
        }
        for (o, vals) in p.outputs.iter().zip(vals_o.iter_mut()) {
            let mut add = BTreeSet::new();
            for u in std::iter::once(&o.target).chain(&o.uses) {
                if let Some((k, _)) = p.binding(&u.to_string()) {
                    add.extend(vals_b[k].iter().copied());
                }
            }
            let before = vals.len();
            vals.extend(add);
            changed |= vals.len() != before;
        }
        if !changed {
            break;
        }
    }
    let mut extra = Vec::new();
    for (j, vals) in vals_o.iter().enumerate() {
        if vals.contains(&j) {
            let name = &p.outputs[j].name;
            errors.push(
                name.span(),
                format!(
                    "`{name}` would wait for its own value: it runs a leaf on a binding that the value of `{name}` \
                     feeds; a value can only feed steps its own output does not need"
                ),
            );
            continue;
        }
        extra.extend(vals.iter().map(|&v| (v, j)));
    }
    // Stages: a value's users come one stage after it; an output `after` another is built no earlier.
    let mut output_stage = vec![0usize; no];
    let mut binding_stage = vec![0usize; nb];
    for _ in 0..=(nb + no) {
        let mut changed = false;
        for i in 0..nb {
            let s = vals_b[i]
                .iter()
                .filter(|&&v| v < no)
                .map(|&v| output_stage[v] + 1)
                .max()
                .unwrap_or(0);
            if s != binding_stage[i] {
                binding_stage[i] = s;
                changed = true;
            }
        }
        for j in 0..no {
            let from_values = vals_o[j]
                .iter()
                .filter(|&&v| v != j)
                .map(|&v| output_stage[v] + 1)
                .max();
            let from_after = after
                .iter()
                .filter(|&&(_, b)| b == j)
                .map(|&(a, _)| output_stage[a])
                .max();
            let s = from_values.into_iter().chain(from_after).max().unwrap_or(0).min(no);
            if s != output_stage[j] {
                output_stage[j] = s;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    (
        Values {
            binding_stage,
            output_stage,
        },
        extra,
    )
}

/// Inputs and the bindings defined before binding `upto`.
fn in_scope(p: &Pipeline, upto: usize) -> Vec<String> {
    p.inputs
        .iter()
        .map(|i| i.name.to_string())
        .chain(
            p.bindings[..upto]
                .iter()
                .flat_map(|b| b.names().map(ToString::to_string)),
        )
        .collect()
}

/// "unknown binding `tset`; did you mean `test`? in scope: …"
fn unknown(kind: &str, name: &Ident, candidates: &[String]) -> String {
    let name = name.to_string();
    let mut unique: Vec<String> = Vec::new();
    for c in candidates {
        if !unique.contains(c) {
            unique.push(c.clone());
        }
    }
    let candidates = &unique[..];
    let mut msg = format!("unknown {kind} `{name}`");
    if let Some(best) = did_you_mean(&name, candidates) {
        msg.push_str(&format!(" (did you mean `{best}`?)"));
    }
    if candidates.is_empty() {
        msg.push_str("; nothing is in scope here");
    } else {
        let list: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
        msg.push_str(&format!("; in scope: {}", list.join(", ")));
    }
    msg
}

fn did_you_mean<'a>(name: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

// Rule: an output is one known leaf on an input or binding, and its arguments use only those names.
fn check_outputs(p: &Pipeline, errors: &mut Errors) {
    // Rule: a pipeline with nothing to evaluate does nothing; the engine is lazy.
    if p.outputs.is_empty() && !p.bindings.iter().any(|b| b.pipeline) {
        errors.push(
            p.name.span(),
            format!(
                "pipeline `{}` has no outputs, so it would never run anything: add `out name = binding.leaf();` \
                 (for example `.sync()` or `.stdout()`)",
                p.name
            ),
        );
    }
    let all: Vec<String> = in_scope(p, p.bindings.len());
    let leaf_names: BTreeSet<&str> = LEAVES.iter().flat_map(|(_, leaves)| leaves.iter().copied()).collect();
    for o in &p.outputs {
        let target = o.target.to_string();
        if let Some(l) = p.loop_var(&target) {
            errors.push(
                o.target.span(),
                format!(
                    "`{target}` is an element of `{}`, a plain value, not an object: an output runs a leaf on a \
                     binding or an input",
                    loop_text(p, l)
                ),
            );
        } else if p.input(&target).is_none() && p.binding(&target).is_none() {
            errors.push(o.target.span(), unknown("binding", &o.target, &all));
        } else if let Some((_, b)) = p.binding(&target)
            && let Some(cut) = cut_off_by(p, b.each, o.each)
        {
            // Rule: a binding of a loop has one value per element; its outputs are declared in the loop and
            // become maps keyed by element (in an `if` block: options).
            let theirs = match b.each {
                Some(l) if p.loops[l].cond.is_some() => l,
                _ => cut,
            };
            let outside = p.within(p.loops[cut].parent, o.each);
            let fix = match (outside, p.loops[theirs].cond) {
                (true, None) => {
                    "put this `out` inside that loop: it becomes a map with one value per element".to_owned()
                }
                (true, Some(_)) => "put this `out` inside that block: it becomes an `Option`".to_owned(),
                (false, _) => format!("`{}` cannot use it", loop_text(p, o.each.unwrap_or(cut))),
            };
            errors.push(o.target.span(), format!("`{target}` {}; {fix}", block_value(p, theirs)));
        }
        for used in &o.uses {
            if check_loop_scope(p, used, o.each, errors) {
                continue;
            }
            if p.binding(&used.to_string()).is_none()
                && let Some(v) = p.output(&used.to_string())
            {
                check_value_use(p, used, v, o.each, o.pos, errors);
                continue;
            }
            if p.input(&used.to_string()).is_none() && p.binding(&used.to_string()).is_none() {
                errors.push(used.span(), unknown("binding", used, &all));
            }
        }
        let leaf = o.leaf.to_string();
        let base = leaf.strip_suffix("_opts").unwrap_or(&leaf);
        if !leaf_names.contains(base) {
            let candidates: Vec<String> = leaf_names.iter().map(|s| (*s).to_owned()).collect();
            let mut msg = format!("`{leaf}` is not a leaf");
            if let Some(best) = did_you_mean(base, &candidates) {
                msg.push_str(&format!(" (did you mean `{best}`?)"));
            }
            msg.push_str(
                "; an output evaluates one leaf, such as `sync`, `stdout`, `contents`, `export` or `publish`; \
                 builder calls (`with_exec`, `file`, …) belong inside a step",
            );
            errors.push(o.leaf.span(), msg);
        }
    }
}

// Rule: every binding must reach an output; otherwise it is dead code that never runs (prefix `_` to keep it).
fn check_unused_bindings(p: &Pipeline, errors: &mut Errors) {
    let mut used: BTreeSet<String> = BTreeSet::new();
    // `after x` counts as a use of `x`: whether waiting on it makes sense is the `after` rules' business.
    // A pipeline used in this one always runs (its outputs are part of this one's).
    let mut stack: Vec<String> = p
        .outputs
        .iter()
        .flat_map(|o| {
            std::iter::once(o.target.to_string())
                .chain(o.uses.iter().map(|u| u.to_string()))
                .chain(o.after.iter().map(|a| a.to_string()))
        })
        .chain(
            p.bindings
                .iter()
                .filter(|b| b.pipeline)
                .flat_map(|b| b.names().map(ToString::to_string)),
        )
        .collect();
    while let Some(name) = stack.pop() {
        if !used.insert(name.clone()) {
            continue;
        }
        if let Some((_, b)) = p.binding(&name) {
            stack.extend(b.uses.iter().map(|u| u.to_string()));
        }
    }
    if p.outputs.is_empty() {
        return;
    }
    for b in &p.bindings {
        for ident in b.names() {
            let name = ident.to_string();
            if used.contains(&name) || name.starts_with('_') {
                continue;
            }
            // An element of a tuple whose step runs anyway only needs a `_`.
            let fix = if b.tuple && b.names().any(|n| used.contains(&n.to_string())) {
                "use it in an `out` or pass it to a step that is, or write `_` in its place in the tuple".to_owned()
            } else {
                "use it in an `out`, pass it to a step that is, or remove it (prefix it with `_` to keep it anyway)"
                    .to_owned()
            };
            errors.push(
                ident.span(),
                format!("binding `{name}` is never used by an output, so it would never run; {fix}"),
            );
        }
    }
}

/// Resolves `after` names to output indexes; a binding name means every output on that binding.
/// Also returns the edges to the outputs of pipelines used in this one (see [`Checked::composed_after`]).
type ComposedAfter = Vec<(usize, usize, Option<Ident>)>;

fn after_edges(p: &Pipeline, errors: &mut Errors) -> (Vec<(usize, usize)>, ComposedAfter) {
    let mut edges = Vec::new();
    let mut composed = Vec::new();
    let outputs: Vec<String> = p.outputs.iter().map(|o| o.name.to_string()).collect();
    for (i, o) in p.outputs.iter().enumerate() {
        for (name, field) in &o.after_fields {
            // Rule: `after x.y` names an output `y` of the pipeline used as `x`.
            match p.binding(&name.to_string()) {
                Some((j, b)) if b.pipeline => composed.push((i, j, Some(field.clone()))),
                _ => errors.push(
                    name.span(),
                    format!(
                        "`{name}.{field}`: only the outputs of a pipeline used in this one (`let {name} = \
                         lint::run(…);`) are named with a dot; name an output of this pipeline, or a binding"
                    ),
                ),
            }
        }
        for name in &o.after {
            if let Some((j, b)) = p.binding(&name.to_string())
                && b.pipeline
            {
                // `after checks`: every output of the pipeline used as `checks`.
                composed.push((i, j, None));
                continue;
            }
            let text = name.to_string();
            // Rule: waiting for yourself can never finish.
            if o.name == text {
                errors.push(
                    name.span(),
                    format!("output `{text}` cannot run `after` itself; remove `{text}` here"),
                );
                continue;
            }
            if let Some(j) = outputs.iter().position(|n| *n == text) {
                edges.push((j, i));
                continue;
            }
            if p.binding(&text).is_some() || p.input(&text).is_some() {
                let on: Vec<usize> = p
                    .outputs
                    .iter()
                    .enumerate()
                    .filter(|(_, x)| x.target == text)
                    .map(|(j, _)| j)
                    .collect();
                if on.is_empty() {
                    errors.push(
                        name.span(),
                        format!(
                            "`after {text}` waits for nothing: `{text}` has no outputs; name an output, or add one such \
                             as `out {text}_done = {text}.sync();`"
                        ),
                    );
                }
                for j in on {
                    if j == i {
                        errors.push(
                            name.span(),
                            format!("output `{}` cannot run `after` its own binding `{text}`", o.name),
                        );
                    } else {
                        edges.push((j, i));
                    }
                }
                continue;
            }
            // Rule: `after` names something that exists.
            let mut candidates = outputs.clone();
            candidates.extend(p.bindings.iter().flat_map(|b| b.names().map(ToString::to_string)));
            errors.push(name.span(), unknown("output", name, &candidates));
        }
    }
    edges.sort_unstable();
    edges.dedup();
    (edges, composed)
}

// Rule: `after` edges must not form a cycle; the cycle is printed so it can be broken.
fn levels(p: &Pipeline, edges: &[(usize, usize)], errors: &mut Errors) -> Vec<Vec<usize>> {
    let n = p.outputs.len();
    let mut indegree = vec![0usize; n];
    for &(_, b) in edges {
        indegree[b] += 1;
    }
    let mut level: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
    let mut levels = Vec::new();
    let mut placed = 0;
    while !level.is_empty() {
        placed += level.len();
        let mut next = Vec::new();
        for &a in &level {
            for &(x, b) in edges {
                if x == a {
                    indegree[b] -= 1;
                    if indegree[b] == 0 {
                        next.push(b);
                    }
                }
            }
        }
        next.sort_unstable();
        levels.push(level);
        level = next;
    }
    if placed < n
        && let Some(cycle) = find_cycle(n, edges)
    {
        let names: Vec<String> = cycle.iter().map(|&i| format!("`{}`", p.outputs[i].name)).collect();
        let at = cycle[0];
        let span = p.outputs[at]
            .after
            .first()
            .map_or(p.outputs[at].name.span(), Ident::span);
        errors.push(
            span,
            format!(
                "`after` forms a cycle: {} → {}; no output in it could ever start. Remove one of these `after`s",
                names.join(" → "),
                names[0]
            ),
        );
    }
    levels
}

/// One cycle of the graph, as output indexes in order, if there is any.
fn find_cycle(n: usize, edges: &[(usize, usize)]) -> Option<Vec<usize>> {
    // 0 = unvisited, 1 = on the stack, 2 = done.
    fn visit(v: usize, edges: &[(usize, usize)], state: &mut [u8], stack: &mut Vec<usize>) -> Option<Vec<usize>> {
        state[v] = 1;
        stack.push(v);
        for &(a, b) in edges {
            if a != v {
                continue;
            }
            if state[b] == 1 {
                let start = stack.iter().position(|&x| x == b).unwrap_or(0);
                return Some(stack[start..].to_vec());
            }
            if state[b] == 0
                && let Some(c) = visit(b, edges, state, stack)
            {
                return Some(c);
            }
        }
        stack.pop();
        state[v] = 2;
        None
    }
    let mut state = vec![0u8; n];
    for v in 0..n {
        if state[v] == 0
            && let Some(c) = visit(v, edges, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::parse::Pipelines;

    fn run(src: &str) -> (Option<Checked>, Vec<String>) {
        let Pipelines(mut ps) = syn::parse_str(src).expect("parses");
        let p = ps.remove(0);
        let mut errors = Errors::default();
        let checked = check(&p, &mut errors);
        let msgs = errors.messages();
        (Some(checked), msgs)
    }

    #[test]
    fn levels_follow_after_edges() {
        let (c, errs) = run(
            "ci(src: Directory) { let a = s(src); out x = a.sync(); out y = a.stdout() after x; \
             out z = a.stderr() after x; out w = a.exit_code() after y, z; }",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(c.expect("checked").levels, vec![vec![0], vec![1, 2], vec![3]]);
    }

    #[test]
    fn independent_outputs_share_one_level() {
        let (c, errs) = run("ci(src: Directory) { let a = s(src); let b = t(a); out x = a.sync(); out y = b.sync(); }");
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(c.expect("checked").levels, vec![vec![0, 1]]);
    }

    #[test]
    fn cycle_is_printed() {
        let (_, errs) =
            run("ci(src: Directory) { let a = s(src); out x = a.sync() after y; out y = a.stdout() after x; }");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("`after` forms a cycle: `x` → `y` → `x`"), "{errs:?}");
    }

    #[test]
    fn unknown_binding_suggests() {
        let (_, errs) = run("ci(src: Directory) { let test = s(src); let b = t(tset); out x = b.sync(); }");
        assert!(
            errs.iter()
                .any(|e| e.contains("unknown binding `tset` (did you mean `test`?)")),
            "{errs:?}"
        );
    }

    #[test]
    fn all_errors_are_reported_together() {
        let (_, errs) = run("ci(src: Directory) { let a = s(zz); let a = s(src); let unused = s(src); }");
        assert!(errs.len() >= 3, "{errs:?}");
    }

    #[test]
    fn a_loop_body_sees_its_variable_and_a_binding_after_the_loop_is_a_map() {
        let (_, errs) = run(
            "ci(src: Directory, vs: Vec<String>) { for v in vs { let tc = t(src, v); out logs = tc.stdout(); } \
             let all = gather(tc); out n = all.entries(); }",
        );
        assert!(errs.is_empty(), "{errs:?}");
    }

    #[test]
    fn loop_rules() {
        let (_, errs) = run(
            "ci(src: Directory, vs: Vec<String>) { for v in versions { let tc = t(src, v); out logs = tc.stdout(); } \
             let other = t(src, v); out bad = tc.stdout(); out x = other.sync(); }",
        );
        let want = [
            "unknown input `versions`; in scope: `src`, `vs`; a loop goes over one of the pipeline's inputs",
            "`v` is only defined inside `for v in versions { … }`",
            "`tc` has one value per element of `for v in versions`; put this `out` inside that loop",
        ];
        for w in want {
            assert!(errs.iter().any(|e| e.starts_with(w)), "{w}\n{errs:?}");
        }
    }

    #[test]
    fn edit_distance_works() {
        assert_eq!(edit_distance("tset", "test"), 2);
        assert_eq!(edit_distance("stdot", "stdout"), 1);
    }
}
