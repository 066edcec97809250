/* The segment rule builder (docs/segments.md): groups of conditions and behaviours edited as a
 * form, kept in step with the rule's JSON textarea (what the form submits), with the live
 * audience of the rule from the server after each change. No dependencies. */
"use strict";

(function () {
  const OPERATOR_LABELS = {
    eq: "is", ne: "is not", gt: "is more than", gte: "is at least", lt: "is less than",
    lte: "is at most", in: "is one of", is: "is",
  };
  const COUNT_LABELS = {
    eq: "exactly", ne: "not exactly", gt: "more than", gte: "at least", lt: "fewer than",
    lte: "at most",
  };

  function element(tag, attributes, children) {
    const node = document.createElement(tag);
    Object.entries(attributes || {}).forEach(([key, value]) => {
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
    });
    (children || []).forEach((child) => node.append(child));
    return node;
  }

  function select(options, value, onchange, label) {
    const node = element("select", { "aria-label": label, onchange });
    options.forEach(([key, text]) => {
      node.append(element("option", { value: key, text, selected: key === value }));
    });
    return node;
  }

  /* ---------------------------------------------------------------- the tree, as data */

  function fromRule(rule) {
    if (rule && rule.not !== undefined) {
      const inner = fromRule(rule.not);
      if (inner.kind === "group") return { ...inner, negated: !inner.negated };
      return { kind: "group", op: "all", negated: true, children: [inner] };
    }
    if (rule && (rule.all || rule.any)) {
      const op = rule.all ? "all" : "any";
      return { kind: "group", op, negated: false, children: rule[op].map(fromRule) };
    }
    if (rule && rule.event !== undefined) return { kind: "behaviour", ...rule };
    if (rule && rule.field !== undefined) return { kind: "condition", ...rule };
    throw new Error("not a rule");
  }

  function toRule(node) {
    if (node.kind === "group") {
      const group = { [node.op]: node.children.map(toRule) };
      return node.negated ? { not: group } : group;
    }
    const { kind, ...rule } = node;
    return rule;
  }

  // The path the server names in its errors ("rule.all[1].any[0]"), per node.
  function pathsOf(node, path, paths) {
    paths.set(node, path);
    if (node.kind === "group") {
      const base = (node.negated ? `${path}.not` : path) + `.${node.op}`;
      node.children.forEach((child, index) => pathsOf(child, `${base}[${index}]`, paths));
    }
    return paths;
  }

  function newCondition() {
    return { kind: "condition", field: "purchases", op: "gte", value: 1 };
  }

  function newBehaviour() {
    return { kind: "behaviour", event: "purchase", count: { op: "gte", value: 1 }, within_days: 30 };
  }

  function defaultValue(field, op) {
    if (field.kind === "bool") return true;
    if (field.kind === "choice") return op === "in" ? [field.choices[0]] : field.choices[0];
    if (field.kind === "money") return "0";
    return 0;
  }

  /* ---------------------------------------------------------------- the builder */

  function RuleBuilder(root) {
    const vocabulary = JSON.parse(root.querySelector("#rule-builder-vocabulary").textContent);
    const textarea = document.getElementById(root.dataset.for);
    const tree = root.querySelector(".rule-builder-tree");
    const status = root.querySelector(".rule-builder-status");
    const errors = root.querySelector(".rule-builder-errors");
    const sample = root.querySelector(".rule-builder-sample");
    const categories = root.querySelector("#rule-builder-categories");
    const fieldOptions = Object.entries(vocabulary.fields).map(([key, field]) => [key, field.label]);
    const eventOptions = Object.entries(vocabulary.events);
    let top;
    let paths = new Map();
    let timer = null;
    let asked = 0;

    function load() {
      const text = textarea.value.trim();
      try {
        const rule = text ? JSON.parse(text) : null;
        top = rule === null ? null : fromRule(rule);
      } catch (error) {
        tree.replaceChildren(element("p", {
          class: "errornote", text: "This rule cannot be shown as a builder; edit its JSON below.",
        }));
        root.querySelector(".rule-builder-json").open = true;
        return false;
      }
      if (!top || top.kind !== "group") {
        top = { kind: "group", op: "all", negated: false, children: top ? [top] : [newCondition()] };
      }
      return true;
    }

    function sync() {
      textarea.value = JSON.stringify(toRule(top), null, 2);
    }

    function changed() {
      sync();
      render();
      clearTimeout(timer);
      timer = setTimeout(ask, 300);
    }

    function render() {
      paths = pathsOf(top, "rule", new Map());
      tree.replaceChildren(renderGroup(top, null));
    }

    function renderGroup(group, parent) {
      const box = element("div", { class: "rb-group" + (group.negated ? " rb-negated" : "") });
      box.dataset.path = paths.get(group);
      const head = element("div", { class: "rb-row" }, [
        select([["", "Match"], ["not", "Exclude visitors matching"]], group.negated ? "not" : "",
          (event) => { group.negated = event.target.value === "not"; changed(); }, "Match or exclude"),
        select([["all", "all of"], ["any", "any of"]], group.op,
          (event) => { group.op = event.target.value; changed(); }, "All or any"),
        element("span", { text: "these:" }),
      ]);
      if (parent) head.append(removeButton(parent, group));
      const children = element("div", { class: "rb-children" });
      group.children.forEach((child) => {
        children.append(child.kind === "group" ? renderGroup(child, group)
          : child.kind === "behaviour" ? renderBehaviour(child, group) : renderCondition(child, group));
      });
      const actions = element("div", { class: "rb-actions" }, [
        element("button", { type: "button", class: "button rb-add-condition", text: "+ Profile condition",
          onclick: () => { group.children.push(newCondition()); changed(); } }),
        element("button", { type: "button", class: "button rb-add-behaviour", text: "+ Behaviour",
          onclick: () => { group.children.push(newBehaviour()); changed(); } }),
        element("button", { type: "button", class: "button rb-add-group", text: "+ Group",
          onclick: () => {
            group.children.push({ kind: "group", op: "any", negated: false, children: [newCondition()] });
            changed();
          } }),
      ]);
      box.append(head, children, actions);
      return box;
    }

    function removeButton(parent, node) {
      return element("button", { type: "button", class: "rb-remove", title: "Remove", "aria-label": "Remove",
        text: "✕", onclick: () => { parent.children.splice(parent.children.indexOf(node), 1); changed(); } });
    }

    function renderCondition(condition, parent) {
      const field = vocabulary.fields[condition.field] || vocabulary.fields.purchases;
      const row = element("div", { class: "rb-row rb-condition" });
      row.dataset.path = paths.get(condition);
      row.append(
        select(fieldOptions, condition.field, (event) => {
          const next = vocabulary.fields[event.target.value];
          condition.field = event.target.value;
          condition.op = next.operators.includes(condition.op) ? condition.op : next.operators[0];
          condition.value = defaultValue(next, condition.op);
          changed();
        }, "Field"),
        select(field.operators.map((op) => [op, OPERATOR_LABELS[op]]), condition.op, (event) => {
          const wasIn = condition.op === "in";
          condition.op = event.target.value;
          if (wasIn !== (condition.op === "in")) condition.value = defaultValue(field, condition.op);
          changed();
        }, "Operator"),
        valueInput(field, condition),
        removeButton(parent, condition),
      );
      return row;
    }

    function valueInput(field, condition) {
      if (field.kind === "bool") {
        return select([["true", "yes"], ["false", "no"]], String(condition.value),
          (event) => { condition.value = event.target.value === "true"; changed(); }, "Value");
      }
      if (field.kind === "choice" && condition.op === "in") {
        const box = element("span", { class: "rb-choices" });
        field.choices.forEach((choice) => {
          const checkbox = element("input", { type: "checkbox", value: choice,
            checked: condition.value.includes(choice),
            onchange: () => {
              condition.value = field.choices.filter((item) =>
                box.querySelector(`input[value="${item}"]`).checked);
              changed();
            } });
          box.append(element("label", {}, [checkbox, ` ${choice} `]));
        });
        return box;
      }
      if (field.kind === "choice") {
        return select(field.choices.map((choice) => [choice, choice]), condition.value,
          (event) => { condition.value = event.target.value; changed(); }, "Value");
      }
      return element("input", {
        type: "number", step: field.kind === "money" ? "0.01" : "1", value: condition.value,
        "aria-label": "Value", required: true,
        onchange: (event) => {
          const raw = event.target.value;
          condition.value = field.kind === "money" ? raw : raw === "" ? raw : Number(raw);
          changed();
        },
      });
    }

    function renderBehaviour(behaviour, parent) {
      const row = element("div", { class: "rb-row rb-behaviour" });
      row.dataset.path = paths.get(behaviour);
      const window = behaviour.between ? "between" : behaviour.within_days ? "days" : "ever";
      row.append(
        select(eventOptions, behaviour.event, (event) => {
          behaviour.event = event.target.value;
          if (behaviour.event === "cart_abandonment") { delete behaviour.category; delete behaviour.product_id; }
          changed();
        }, "Behaviour"),
        select(vocabulary.operators.map((op) => [op, COUNT_LABELS[op]]), behaviour.count.op,
          (event) => { behaviour.count.op = event.target.value; changed(); }, "Count operator"),
        element("input", { type: "number", min: "0", step: "1", value: behaviour.count.value,
          "aria-label": "Times", required: true,
          onchange: (event) => { behaviour.count.value = Number(event.target.value); changed(); } }),
        element("span", { text: "times" }),
        select([["ever", "at any time"], ["days", "in the last"], ["between", "between"]], window,
          (event) => {
            delete behaviour.within_days;
            delete behaviour.between;
            const today = new Date().toISOString().slice(0, 10);
            if (event.target.value === "days") behaviour.within_days = 30;
            if (event.target.value === "between") behaviour.between = [today, today];
            changed();
          }, "When"),
      );
      if (window === "days") {
        row.append(
          element("input", { type: "number", min: "1", step: "1", value: behaviour.within_days,
            "aria-label": "Days", onchange: (event) => { behaviour.within_days = Number(event.target.value); changed(); } }),
          element("span", { text: "days" }),
        );
      }
      if (window === "between") {
        [0, 1].forEach((index) => {
          if (index === 1) row.append(element("span", { text: "and" }));
          row.append(element("input", { type: "date", value: behaviour.between[index],
            "aria-label": index ? "Last day" : "First day",
            onchange: (event) => { behaviour.between[index] = event.target.value; changed(); } }));
        });
      }
      if (behaviour.event !== "cart_abandonment") {
        row.append(
          element("input", { type: "text", list: "rule-builder-categories", placeholder: "any category",
            value: behaviour.category || "", "aria-label": "Category", maxlength: "100",
            onchange: (event) => {
              if (event.target.value) behaviour.category = event.target.value; else delete behaviour.category;
              changed();
            } }),
          element("input", { type: "text", placeholder: "any product", value: behaviour.product_id || "",
            "aria-label": "Product id", maxlength: "100",
            onchange: (event) => {
              if (event.target.value) behaviour.product_id = event.target.value; else delete behaviour.product_id;
              changed();
            } }),
        );
      }
      row.append(removeButton(parent, behaviour));
      return row;
    }

    /* ------------------------------------------------------------ the live audience */

    function ask() {
      const form = textarea.form;
      const client = form.querySelector("#id_client");
      const token = form.querySelector("input[name=csrfmiddlewaretoken]");
      let rule;
      try {
        rule = JSON.parse(textarea.value);
      } catch (error) {
        status.textContent = "The rule's JSON is not valid: fix it below.";
        return;
      }
      const body = { rule };
      if (client) body.client = Number(client.value) || null;
      const number = ++asked;
      status.textContent = "Counting…";
      fetch(vocabulary.audience_url, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": token ? token.value : "" },
        body: JSON.stringify(body),
      }).then((response) => response.json().then((data) => {
        if (number === asked) show(data);
      })).catch(() => {
        if (number === asked) status.textContent = "The audience could not be counted just now.";
      });
    }

    function show(data) {
      errors.replaceChildren();
      tree.querySelectorAll(".rb-invalid").forEach((node) => {
        node.classList.remove("rb-invalid");
        node.removeAttribute("title");
      });
      if (data.errors) {
        status.textContent = "Fix the rule to see its audience:";
        sample.hidden = true;
        data.errors.forEach((message) => {
          errors.append(element("li", { text: message }));
          const path = message.split(":")[0];
          tree.querySelectorAll("[data-path]").forEach((node) => {
            if (path === node.dataset.path || path.startsWith(node.dataset.path + ".")) {
              if (!node.classList.contains("rb-group") || path === node.dataset.path) {
                node.classList.add("rb-invalid");
                node.title = message;
              }
            }
          });
        });
        return;
      }
      const count = data.count.toLocaleString("en-US");
      status.textContent = `${count} visitor${data.count === 1 ? "" : "s"} match now.`;
      const rows = sample.querySelector("tbody");
      rows.replaceChildren(...data.sample.map((profile) => element("tr", {}, [
        element("td", { text: profile.visitor_id }),
        element("td", { text: profile.visits }),
        element("td", { text: profile.purchases }),
        element("td", { text: profile.total_spent }),
        element("td", { text: new Date(profile.last_seen_at).toLocaleString() }),
      ])));
      sample.hidden = data.sample.length === 0;
      categories.replaceChildren(...(data.categories || []).map((name) => element("option", { value: name })));
    }

    function start() {
      if (!load()) return;
      sync();
      render();
      ask();
    }

    textarea.addEventListener("change", start);
    const client = textarea.form && textarea.form.querySelector("#id_client");
    if (client) client.addEventListener("change", ask);
    start();
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll(".rule-builder").forEach(RuleBuilder);
  });
})();
