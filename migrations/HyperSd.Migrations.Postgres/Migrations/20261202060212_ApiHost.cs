using System;
using Microsoft.EntityFrameworkCore.Migrations;

#nullable disable

namespace HyperSd.Migrations.Postgres.Migrations
{
    /// <inheritdoc />
    public partial class ApiHost : Migration
    {
        /// <inheritdoc />
        protected override void Up(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.AddColumn<string>(
                name: "base_model",
                table: "runs",
                type: "text",
                nullable: false,
                defaultValue: "");

            migrationBuilder.CreateTable(
                name: "api_keys",
                columns: table => new
                {
                    id = table.Column<Guid>(type: "uuid", nullable: false),
                    name = table.Column<string>(type: "text", nullable: false),
                    role = table.Column<string>(type: "text", nullable: false),
                    sha256 = table.Column<string>(type: "text", nullable: false),
                    created_at = table.Column<DateTimeOffset>(type: "timestamp with time zone", nullable: false)
                },
                constraints: table =>
                {
                    table.PrimaryKey("pk_api_keys", x => x.id);
                });

            migrationBuilder.CreateIndex(
                name: "ix_runs_base_model",
                table: "runs",
                column: "base_model");

            migrationBuilder.CreateIndex(
                name: "ix_runs_created_at",
                table: "runs",
                column: "created_at");

            migrationBuilder.CreateIndex(
                name: "ix_runs_name",
                table: "runs",
                column: "name");

            migrationBuilder.CreateIndex(
                name: "ix_evaluations_created_at",
                table: "evaluations",
                column: "created_at");

            migrationBuilder.CreateIndex(
                name: "ix_evaluations_metric_steps",
                table: "evaluations",
                columns: new[] { "metric", "steps" });

            migrationBuilder.CreateIndex(
                name: "ix_evaluations_sampler",
                table: "evaluations",
                column: "sampler");

            migrationBuilder.CreateIndex(
                name: "ix_api_keys_sha256",
                table: "api_keys",
                column: "sha256",
                unique: true);
        }

        /// <inheritdoc />
        protected override void Down(MigrationBuilder migrationBuilder)
        {
            migrationBuilder.DropTable(
                name: "api_keys");

            migrationBuilder.DropIndex(
                name: "ix_runs_base_model",
                table: "runs");

            migrationBuilder.DropIndex(
                name: "ix_runs_created_at",
                table: "runs");

            migrationBuilder.DropIndex(
                name: "ix_runs_name",
                table: "runs");

            migrationBuilder.DropIndex(
                name: "ix_evaluations_created_at",
                table: "evaluations");

            migrationBuilder.DropIndex(
                name: "ix_evaluations_metric_steps",
                table: "evaluations");

            migrationBuilder.DropIndex(
                name: "ix_evaluations_sampler",
                table: "evaluations");

            migrationBuilder.DropColumn(
                name: "base_model",
                table: "runs");
        }
    }
}
