-- The embedded demo database: a tiny shop, read by the DataHub `sqlalchemy`
-- source with no server at all. `inv run-local` (and run_local_docker.sh)
-- turn this script into sample.db next to it when that file is missing.
-- Foreign keys are named on purpose: DataHub cannot serialise an unnamed one
-- (SQLite's inline REFERENCES) and fails the table.
PRAGMA foreign_keys = ON;

CREATE TABLE customers (
    customer_id INTEGER PRIMARY KEY,
    full_name   TEXT    NOT NULL,
    email       TEXT    NOT NULL UNIQUE,
    country     TEXT    NOT NULL,
    created_at  TEXT    NOT NULL
);

CREATE TABLE products (
    product_id  INTEGER PRIMARY KEY,
    sku         TEXT    NOT NULL UNIQUE,
    title       TEXT    NOT NULL,
    unit_price  NUMERIC NOT NULL CHECK (unit_price >= 0)
);

CREATE TABLE orders (
    order_id    INTEGER PRIMARY KEY,
    customer_id INTEGER NOT NULL,
    ordered_at  TEXT    NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('placed', 'shipped', 'cancelled')),
    CONSTRAINT fk_orders_customer FOREIGN KEY (customer_id) REFERENCES customers (customer_id)
);

CREATE TABLE order_items (
    order_id    INTEGER NOT NULL,
    product_id  INTEGER NOT NULL,
    quantity    INTEGER NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id),
    CONSTRAINT fk_items_order FOREIGN KEY (order_id) REFERENCES orders (order_id),
    CONSTRAINT fk_items_product FOREIGN KEY (product_id) REFERENCES products (product_id)
);

CREATE VIEW customer_revenue AS
SELECT c.customer_id,
       c.full_name,
       COUNT(DISTINCT o.order_id)          AS orders,
       SUM(i.quantity * p.unit_price)      AS revenue
FROM customers c
JOIN orders o       ON o.customer_id = c.customer_id AND o.status <> 'cancelled'
JOIN order_items i  ON i.order_id = o.order_id
JOIN products p     ON p.product_id = i.product_id
GROUP BY c.customer_id, c.full_name;

INSERT INTO customers VALUES
    (1, 'Ada Lovelace',   'ada@example.com',   'GB', '2024-01-05'),
    (2, 'Grace Hopper',   'grace@example.com', 'US', '2024-02-11'),
    (3, 'Edsger Dijkstra','edsger@example.com','NL', '2024-03-20');

INSERT INTO products VALUES
    (1, 'KB-01', 'Mechanical keyboard', 89.00),
    (2, 'MS-02', 'Wireless mouse',      25.50),
    (3, 'MN-27', '27-inch monitor',    219.99);

INSERT INTO orders VALUES
    (1, 1, '2024-04-01', 'shipped'),
    (2, 2, '2024-04-03', 'placed'),
    (3, 1, '2024-04-09', 'cancelled'),
    (4, 3, '2024-04-12', 'shipped');

INSERT INTO order_items VALUES
    (1, 1, 1), (1, 2, 2),
    (2, 3, 1),
    (3, 2, 1),
    (4, 1, 1), (4, 3, 2);
