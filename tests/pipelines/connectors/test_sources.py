"""Sources against real servers: files (local, S3 via moto), HTTP (http.server), MySQL/MariaDB."""

from __future__ import annotations

import json
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.connectors import connection_test
from pipelines.steps.base import ConnectionSpec, PermanentError, TransientError
from pipelines.steps.ingestion import extract, load, publish, validate
from tests.pipelines.steps.conftest import make_ctx

STEPS = (extract, validate, load, publish)


def run_all(ctx):
    return [step(ctx) for step in STEPS]


def rows(tmp_path, sql="SELECT * FROM sales ORDER BY 1"):
    with sqlite3.connect(tmp_path / "warehouse.sqlite3") as conn:
        return conn.execute(sql).fetchall()


def test_a_glob_of_json_lines_files_is_the_partition(tmp_path):
    folder = tmp_path / "files" / "landing" / "2024-03-10"
    folder.mkdir(parents=True)
    (folder / "a.jsonl").write_text('{"order_id": 1, "tags": ["x"]}\n{"order_id": 2}\n')
    (folder / "b.jsonl").write_text('{"order_id": 3, "tags": []}\n')
    results = run_all(make_ctx(tmp_path, source="landing/{{ ds }}/*.jsonl"))
    assert results[0].rows_read == 3
    assert rows(tmp_path) == [(1, '["x"]', "2024-03-10"), (2, None, "2024-03-10"), (3, "[]", "2024-03-10")]


def test_parquet_gives_the_column_types(tmp_path):
    folder = tmp_path / "files" / "landing" / "2024-03-10"
    folder.mkdir(parents=True)
    table = pa.table({"order_id": pa.array(["007", "8"]), "amount": [1.0, 2.5], "ok": [True, False]})
    pq.write_table(table, folder / "sales.parquet")
    result = run_all(make_ctx(tmp_path, source="landing/{{ ds }}/sales.parquet"))[0]
    assert result.metrics["column_types"] == {"order_id": "text", "amount": "double", "ok": "boolean", "ds": "text"}
    assert rows(tmp_path) == [("007", 1.0, 1, "2024-03-10"), ("8", 2.5, 0, "2024-03-10")]


def test_a_glob_without_match_fails_naming_the_path(tmp_path):
    with pytest.raises(PermanentError, match=r"No source file matches landing/2024-03-10/\*.csv"):
        extract(make_ctx(tmp_path, source="landing/{{ ds }}/*.csv"))


@pytest.fixture
def s3():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_s3_files_are_read_with_the_secret_key(tmp_path, s3):
    import boto3

    client = boto3.client("s3", endpoint_url=s3, aws_access_key_id="AKID", aws_secret_access_key="s3cr3t",
                          region_name="us-east-1")
    client.create_bucket(Bucket="landing")
    client.put_object(Bucket="landing", Key="shop/2024-03-10/part-1.csv", Body=b"order_id,amount\n1,10\n")
    client.put_object(Bucket="landing", Key="shop/2024-03-10/part-2.csv", Body=b"order_id,amount\n2,20\n")
    spec = ConnectionSpec("lake", "files", {"base_path": "s3://landing/shop", "endpoint_url": s3, "key": "AKID"},
                          secret="s3cr3t")
    assert connection_test(spec).startswith("OK: s3://landing/shop is readable")
    ctx = make_ctx(tmp_path, connections={"lake": spec}, source_connection="lake", source="{{ ds }}/*.csv")
    assert run_all(ctx)[0].rows_read == 2
    assert rows(tmp_path) == [(1, 10, "2024-03-10"), (2, 20, "2024-03-10")]
    missing = make_ctx(tmp_path, ds="2024-03-11", connections={"lake": spec}, source_connection="lake",
                       source="{{ ds }}/part-1.csv", run_id=2)
    with pytest.raises(PermanentError, match="Source file 2024-03-11/part-1.csv does not exist") as excinfo:
        extract(missing)
    assert "s3cr3t" not in str(excinfo.value)


class Api(BaseHTTPRequestHandler):
    seen_headers: list[str] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        Api.seen_headers.append(self.headers.get("Authorization", ""))
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        if url.path == "/linked":
            page = int(query.get("cursor", ["1"])[0])
            body = {"data": {"items": [{"id": page * 10 + i, "day": query["date"][0]} for i in range(2)]},
                    "links": {"next": f"/linked?date={query['date'][0]}&cursor={page + 1}" if page < 3 else None}}
        elif url.path == "/numbered":
            page = int(query["page"][0])
            body = {"data": {"items": [{"id": page}] if page <= 2 else []}}
        else:
            self.send_response(500)
            self.end_headers()
            return
        payload = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def api():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def http_spec(url, **config):
    return ConnectionSpec("api", "http", {"url": url, "records_path": "data.items", "header_name": "Authorization",
                                          **config}, secret="Bearer tok3n")


@pytest.mark.parametrize(
    "path, pagination, ids",
    [
        ("/linked?date={{ ds }}", {"type": "next_link", "path": "links.next"}, [10, 11, 20, 21, 30, 31]),
        ("/numbered?date={{ ds }}", {"type": "page_number", "param": "page", "start": 1}, [1, 2]),
    ],
)
def test_http_api_pages_are_followed_with_the_secret_header(tmp_path, api, path, pagination, ids):
    spec = http_spec(api + path, pagination=pagination)
    ctx = make_ctx(tmp_path, connections={"api": spec}, source_connection="api", source="", primary_key=["id"])
    results = run_all(ctx)
    assert [r[0] for r in rows(tmp_path)] == ids
    assert results[0].metrics["bytes_read"] > 0
    assert set(Api.seen_headers) == {"Bearer tok3n"}


def test_http_server_error_is_transient_and_hides_the_secret(tmp_path, api):
    spec = http_spec(api + "/broken")
    ctx = make_ctx(tmp_path, connections={"api": spec}, source_connection="api", source="", primary_key=["id"])
    with pytest.raises(TransientError, match="answered 500") as excinfo:
        extract(ctx)
    assert "tok3n" not in str(excinfo.value)
    with pytest.raises(TransientError, match="does not answer"):
        connection_test(http_spec("http://127.0.0.1:1/x"))


def test_sql_source_query_binds_template_variables_as_parameters(tmp_path):
    path = tmp_path / "src.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (order_id INTEGER, day TEXT)")
        conn.executemany("INSERT INTO orders VALUES (?, ?)", [(1, "2024-03-09"), (2, "2024-03-10"), (3, "2024-03-10")])
    conn.close()
    spec = ConnectionSpec("src", "sqlite", {"path": str(path)})
    ctx = make_ctx(tmp_path, connections={"src": spec}, source_connection="src", source="",
                   source_query="SELECT order_id FROM orders WHERE day = {{ ds }} AND day LIKE '2024%'")
    assert extract(ctx).rows_read == 2
    assert connection_test(spec) == f"OK: connected to SQLite {path}."


def test_mysql_source_streams_a_table_and_a_query(tmp_path):
    pymysql = pytest.importorskip("pymysql")
    try:
        conn = pymysql.connect(host="127.0.0.1", user="root", password="", database="test", connect_timeout=2)
    except pymysql.Error as exc:
        pytest.skip(f"MariaDB does not answer at 127.0.0.1:3306 ({exc})")
    with conn.cursor() as cur:
        cur.execute("DROP TABLE IF EXISTS railyard_orders")
        cur.execute("CREATE TABLE railyard_orders (order_id INT, amount DECIMAL(8,2), created_at DATETIME)")
        cur.execute("INSERT INTO railyard_orders VALUES (1, 1.50, '2024-03-09 23:00:00'), "
                    "(2, 2.00, '2024-03-10 01:00:00'), (3, 3.25, '2024-03-10 23:59:59')")
    conn.commit()
    spec = ConnectionSpec("my", "mysql", {"host": "127.0.0.1", "user": "root", "dbname": "test"})
    try:
        assert connection_test(spec).startswith("OK: connected to MySQL 127.0.0.1:3306/test")
        ctx = make_ctx(tmp_path, connections={"my": spec}, source_connection="my", source="railyard_orders",
                       source_filter_column="created_at")
        run_all(ctx)
        assert rows(tmp_path) == [(2, 2.0, "2024-03-10 01:00:00", "2024-03-10"),
                                  (3, 3.25, "2024-03-10 23:59:59", "2024-03-10")]
        query = make_ctx(tmp_path, connections={"my": spec}, source_connection="my", source="", run_id=2,
                         source_query="SELECT order_id FROM railyard_orders WHERE DATE(created_at) = {{ ds }}",
                         target_table="sales_q")
        assert extract(query).rows_read == 2
    finally:
        with conn.cursor() as cur:
            cur.execute("DROP TABLE IF EXISTS railyard_orders")
        conn.close()


def test_connection_test_of_a_missing_folder_is_permanent(tmp_path):
    with pytest.raises(PermanentError, match="does not exist"):
        connection_test(ConnectionSpec("f", "files", {"base_path": str(tmp_path / "nope")}))
